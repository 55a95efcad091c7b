"""Character-level language modelling: a text file cut into windows of characters, a
GRU and a causal CNN, as ablate's `_target_`s. Nothing here imports ablate."""
