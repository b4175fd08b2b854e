//! Expose PyO3's interpreter cfgs (`Py_3_12`, `Py_LIMITED_API`, ...) to the
//! crate, so version-specific fast paths can be gated at compile time.
fn main() {
    pyo3_build_config::use_pyo3_cfgs();
}
