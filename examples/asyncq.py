#!/usr/bin/env python3
# asyncq.py -- the tutorial's producers and consumers, on rustasync's Queue.
#
# The program itself is python/rustasync/_examples/asyncq.py, shipped inside the
# package so that `python -m rustasync demo` works from an installed wheel.
# This script runs it as if it were this file (same __file__, same arguments).

from rustasync._examples import exec_as

exec_as("asyncq.py", globals())
