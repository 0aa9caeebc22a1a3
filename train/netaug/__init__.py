"""NetAug (docs/netaug.md): train a tiny model inside an augmented supernet, then extract it.

* :mod:`~tinyexport.train.netaug.recipe` - ``tinytrain`` recipes (YAML, then CLI overrides);
* :mod:`~tinyexport.train.netaug.run` - one ``tinytrain`` run, data to ``best.pt`` / ``target.pt``;
* :mod:`~tinyexport.train.netaug.supernet`, :mod:`~tinyexport.train.netaug.layers` - the supernet
  and its width-sliceable layers; :mod:`~tinyexport.train.netaug.surgery` - base extraction and
  channel sorting; :mod:`~tinyexport.train.netaug.task` - the training step and phase schedule;
* :mod:`~tinyexport.train.netaug.supernet_checkpoint` - supernet checkpoints.

This ``__init__`` imports nothing.
"""
