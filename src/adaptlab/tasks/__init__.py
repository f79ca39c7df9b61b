"""Tasks: the model a backbone becomes, its loss, its metrics and its baseline."""
