"""Stage 3, deciding: every statistical decision as pure functions over plain data.

No I/O, no pytest, no torch: the baseline gate, parity, calibration, the paired A/B verdict,
change points and soak verdicts. The session, the A/B tool and the calibration tool all call
these same functions.
"""
