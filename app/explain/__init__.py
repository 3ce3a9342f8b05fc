"""Small self-contained explainers (the 10-D logistic-regression example), shared by pages and experiments."""
