"""Tasks: builders registered by name (conf/task/*.yaml `builder:`) return raw splits; the task
classes here tokenize them and know how to batch and evaluate."""
from peftbench.experiments.data.base import RawClassification, Task, build_task, task_builder, task_builders, task_validator, validate_task

__all__ = ["RawClassification", "Task", "build_task", "task_builder", "task_builders", "task_validator", "validate_task"]
