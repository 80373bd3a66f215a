"""A study's results written for the tools people watch curves in: TensorBoard, MLflow."""
