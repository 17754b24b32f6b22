"""An example project with tasks of its own: ``NATSQ_TASK_MODULES=shop.tasks make run``."""
