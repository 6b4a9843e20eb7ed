"""How sure the local answer is: token-signal scorers, confidence features and probes, and
the calibrated probability compared with τ."""
