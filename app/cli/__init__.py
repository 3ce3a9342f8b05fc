"""The command line (`fooling-lab` or `python -m app`): serve, fetch data and weights, train, fool, experiment."""
