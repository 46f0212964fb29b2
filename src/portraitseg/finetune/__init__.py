"""``portraitseg finetune``: the bundled model adapted to a user's labelled photos.

A fine-tune is the trainer with a recipe: :mod:`.recipe` (the recipe, free of torch),
:mod:`.discover` (folders in our layout or pairs by name, the held-out split), :mod:`.caches`
(``build_cache`` with reuse, the replay pick), :mod:`.training` (``train.Trainer`` under a time
budget with a progress bar), :mod:`.report` (before/after via ``evaluate``, the model card) and
:mod:`.job` (the steps in order: ``finetune(FinetuneJob(...))``).
"""
