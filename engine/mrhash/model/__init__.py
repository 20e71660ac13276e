"""Patches to codes: the backbones, the MrHash networks, pseudo multi-labels, the training
configuration and datasets, training itself (its entry point, `train.train_request`), the
model package on disk with its history, and the compiled CPU encoder."""
