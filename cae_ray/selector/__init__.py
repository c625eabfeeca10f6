"""The selector itself, in torch and numpy only (no Ray, no Feast): the Concrete selector
layers, the model behind them, THE training loop, the final choice of the K features, and the
scikit-learn estimator that trains it in memory."""
