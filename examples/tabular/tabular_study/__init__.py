"""Tabular classification: scikit-learn's breast-cancer set and an MLP, as ablate's
`_target_`s. Nothing here imports ablate."""
