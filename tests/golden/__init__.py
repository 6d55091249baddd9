"""Golden comparison of the CLI's output, taken before the restructure (issue 9).

`cases.py` lists the invocations, `normalise.py` masks what varies between machines,
`capture.py` runs them and (as a script) writes `expected/<case>.txt`;
`tests/test_golden.py` checks the current code against those files byte for byte.
"""
