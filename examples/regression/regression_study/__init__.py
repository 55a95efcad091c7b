"""Tabular regression: scikit-learn's diabetes set and an MLP, as ablate's `_target_`s.
Nothing here imports ablate."""
