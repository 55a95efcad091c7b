"""An example of a study that lives outside ablate: its own model and data classes
here, its own options in ../conf. ablate builds both from `_target_`."""
