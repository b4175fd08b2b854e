//! Python 3.14's call-graph bookkeeping for gather's children.
//!
//! From 3.14 asyncio records which task awaits which future
//! (`asyncio.futures.future_add_to_awaited_by`), and `gather()` registers
//! each child that is not done yet as awaited by the task that called it,
//! until the child is done; `asyncio.capture_call_graph()` reads this. The
//! functions are looked up once; on older Pythons there are none and
//! nothing is recorded.

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

pub(super) struct CallGraph {
    add: Py<PyAny>,
    discard: Py<PyAny>,
    current_task: Py<PyAny>,
}

static GRAPH: PyOnceLock<Option<CallGraph>> = PyOnceLock::new();

impl CallGraph {
    /// The functions, where this Python has them.
    pub(super) fn get(py: Python<'_>) -> PyResult<Option<&CallGraph>> {
        GRAPH
            .get_or_try_init(py, || {
                let futures = py.import("asyncio.futures")?;
                let Some(add) = futures.getattr_opt("future_add_to_awaited_by")? else {
                    return Ok::<_, PyErr>(None);
                };
                Ok(Some(CallGraph {
                    add: add.unbind(),
                    discard: futures.getattr("future_discard_from_awaited_by")?.unbind(),
                    current_task: py.import("asyncio")?.getattr("current_task")?.unbind(),
                }))
            })
            .map(Option::as_ref)
    }

    /// The task that calls `gather()` on `loop_`, if any (3.14+ only).
    pub(super) fn awaiter<'py>(loop_: &Bound<'py, PyAny>) -> PyResult<Option<Bound<'py, PyAny>>> {
        let py = loop_.py();
        let Some(graph) = CallGraph::get(py)? else {
            return Ok(None);
        };
        let task = graph.current_task.bind(py).call1((loop_,))?;
        Ok((!task.is_none()).then_some(task))
    }

    /// Record `fut` as awaited by `task`.
    pub(super) fn add(
        py: Python<'_>,
        fut: &Bound<'_, PyAny>,
        task: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        if let Some(graph) = CallGraph::get(py)? {
            graph.add.bind(py).call1((fut, task))?;
        }
        Ok(())
    }

    /// Forget that `fut` is awaited by `task` (it is done).
    pub(super) fn discard(
        py: Python<'_>,
        fut: &Bound<'_, PyAny>,
        task: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        if let Some(graph) = CallGraph::get(py)? {
            graph.discard.bind(py).call1((fut, task))?;
        }
        Ok(())
    }
}
