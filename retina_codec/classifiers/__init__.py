"""Image classifiers for the CODEC comparison: adapters with named layers, the digits CNN, image sets,
class-mode interventions, Jacobian-chain masks and the full analysis (:func:`classify_stats`)."""

from .adapters import (
    LayerInfo,
    adapt_classifier,
    channel_dim,
    default_digits_path,
    layer_alias,
    load_classifier,
    load_state_dict_file,
    resolve_layers,
)
from .analysis import (
    ClassifyStats,
    classify_stats,
    read_classify_summary,
    read_layer_stats,
    write_classify_stats,
)
from .data import ImageSet, digits_image_set, load_image_folder, load_images
from .digits import (
    DigitsCNN,
    evaluate_accuracy,
    load_digits_cnn,
    load_digits_data,
    save_digits_cnn,
    train_digits_cnn,
)
from .masks import channel_chain_masks, mode_masks
from .selectivity import (
    ClassModeSweep,
    class_mode_sweeps,
    fit_layer_modes,
    selectivity_summary,
    top_class_modes,
)

__all__ = [
    "LayerInfo", "adapt_classifier", "load_classifier", "load_state_dict_file", "resolve_layers", "channel_dim",
    "layer_alias", "default_digits_path",
    "DigitsCNN", "load_digits_data", "train_digits_cnn", "evaluate_accuracy", "save_digits_cnn", "load_digits_cnn",
    "ImageSet", "load_image_folder", "digits_image_set", "load_images",
    "ClassModeSweep", "fit_layer_modes", "top_class_modes", "class_mode_sweeps", "selectivity_summary",
    "channel_chain_masks", "mode_masks",
    "ClassifyStats", "classify_stats", "write_classify_stats", "read_classify_summary", "read_layer_stats",
]
