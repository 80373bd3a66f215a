"""The generator seeds of the training set and of the held-out split, the same for every dataset."""

TRAIN_SEED = 42  # the reference study's
HELDOUT_SEED = 20_250_042
