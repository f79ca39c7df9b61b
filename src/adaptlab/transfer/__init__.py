"""Source-to-target transfer: pre-train on a plentiful source (a simulator, another scenario,
generated shapes), adapt to a scarce target, and always run the control trained on the target
alone with the same budget (``learning_curve``); source runs are cached by their config."""
