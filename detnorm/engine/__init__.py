"""The training engine: the LightningModule, its callbacks, checkpoint I/O, loggers, seeding,
signals and the run folder, and the builders that turn a config into a run (build, trainer, run)."""
