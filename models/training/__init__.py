"""Training of the TCVADS networks: feature bags, 1-D Bayesian optimisation, and QACM distillation from AFED."""
