"""Training stage: the tiny-model zoo, NetAug supernet training and TinyTL transfer.

* :mod:`~tinyexport.train.models` - the zoo (registered builders, specs, the analytic profile);
* :mod:`~tinyexport.train.netaug` - ``tinytrain``: NetAug (or the plain baseline);
  :mod:`~tinyexport.train.tinytl` - ``tinytrain transfer``: TinyTL;
* :mod:`~tinyexport.train.trainer` - the training loop (``Trainer``), driving a
  :mod:`~tinyexport.train.task`; its resume state, metrics, optimiser helpers and evaluation are
  :mod:`state`, :mod:`metrics`, :mod:`optim`, :mod:`evaluate`;
* :mod:`~tinyexport.train.data` - data SPECs, preprocessing, data sets and subsets, over the file
  readers of :mod:`~tinyexport.train.data_readers`; :mod:`device_data` - augmentation on the GPU;
* :mod:`~tinyexport.train.checkpoint_format` - the checkpoint format and the released weights' key
  maps; :mod:`~tinyexport.train.model_from_checkpoint` - the model any checkpoint holds;
  :mod:`pretrained` - the authors' released weights;
* :mod:`cli` (``tinytrain``) and :mod:`cli_options` (the options its subcommands share),
  :mod:`resources` (threads and workers), :mod:`validation` (numeric settings),
  :mod:`bn_recalibration`, :mod:`tv_compat` (torchvision on this stack).

Importing this package is cheap: it imports nothing, and pulls in neither tensorflow nor onnx.
"""
