"""fcn-sweep: hyperparameter sweeps of fully connected networks on FashionMNIST, driven by W&B."""

__version__ = "0.1.0"
