#!/usr/bin/env python3
# rand.py -- the tutorial's makerandom() example, on rustasync.
#
# The program itself is python/rustasync/_examples/rand.py, shipped inside the
# package so that `python -m rustasync demo` works from an installed wheel.
# This script runs it as if it were this file (same __file__, same arguments).

from rustasync._examples import exec_as

exec_as("rand.py", globals())
