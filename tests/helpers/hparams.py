"""DetnormModule hyperparameters of a small GN model, shared by the engine and solver tests."""

HP = dict(
    num_classes=4,
    label_to_cat_id={"1": 0, "2": 5, "3": 7},
    category_names=["a", "b", "c"],
    depth=18,
    norm="gn",
    backbone_norm="frozen_bn",
    gn_groups=16,
    trainable_backbone_layers=3,
    model_kwargs={"min_size": 64, "max_size": 96},
    schedule="2x",
    total_batch_size=4,
    max_steps=None,
)
