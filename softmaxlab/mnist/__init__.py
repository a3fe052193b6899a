"""Problem 2: linear vs MLP on MNIST. IDX bytes -> data -> train (engine) -> records -> study -> Summary.

docs/architecture.md draws the path; each module's docstring says its one job.
"""
