"""Models: the base class with loading and saving (modeling.py), the task models
(task_models.py), their outputs, and the Auto factories."""
