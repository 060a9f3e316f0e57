"""The named choices of fine-tuning and distillation (what the CLI offers, what configs accept)."""

STRATEGIES = ("head", "partial", "full", "gradual")
OPTIMIZERS = ("adamw", "sgd")
HEAD_INITS = ("probe", "random")
LOSSES = ("cosine", "mse", "cosine+mse")
BATCHNORM_MODES = ("auto", "frozen", "train")
