"""Training stage: the tiny-model zoo, NetAug supernet training and TinyTL transfer.

Importing this package is cheap: it pulls in neither tensorflow nor onnx.
"""
