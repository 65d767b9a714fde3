"""The model: ConvNeXt V1/V2 as an mmengine backbone, its presets as data, output selection, layer ids.

Nothing is imported here, so :mod:`.presets` and :mod:`.selection` stay free of torch (the command line lists the
presets without it); import the modules themselves (``cvx2_backbone.models.convnext``), or the public names from
``cvx2_backbone``.
"""
