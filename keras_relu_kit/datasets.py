"""Small real data that ships with scikit-learn: no download, no network."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

_NEEDS_SKLEARN = (
    "keras_relu_kit.datasets needs scikit-learn: pip install 'keras_relu_kit[demo]'"
)


def load_digits(
    image_size: int = 8,
    flatten: bool = True,
    validation_split: float = 0.25,
    seed: int = 0,
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """scikit-learn's bundled handwritten digits, scaled to `[0, 1]`.

    1,797 images of 8x8 pixels, 10 classes. `image_size=28` resizes them
    bilinearly (with `keras.ops.image.resize`, so on any Keras backend) to
    MNIST's size so that the seed text's 784-input models run unchanged.

    Args:
        image_size: int >= 8. Side of the returned images. Defaults to `8`.
        flatten: bool. Return vectors of `image_size**2` features instead of
            `(image_size, image_size, 1)` images. Defaults to `True`.
        validation_split: float in `(0, 1)`. Fraction held out, stratified.
            Defaults to `0.25`.
        seed: int. Seed of the split. Defaults to `0`.

    Returns:
        `((x_train, y_train), (x_val, y_val))`, float32 features and int
        labels.

    Example:

    >>> from keras_relu_kit.datasets import load_digits
    >>> (x, y), (x_val, y_val) = load_digits(image_size=28)
    >>> x.shape[1], len(x) + len(x_val)
    (784, 1797)
    """
    try:
        from sklearn.datasets import load_digits as sklearn_digits
        from sklearn.model_selection import train_test_split
    except ImportError as error:  # pragma: no cover - depends on extras
        raise ImportError(_NEEDS_SKLEARN) from error
    if not isinstance(image_size, int) or image_size < 8:
        raise ValueError(
            "`load_digits` argument `image_size` must be an int >= 8. "
            f"Received: image_size={image_size!r}"
        )
    if not 0.0 < validation_split < 1.0:
        raise ValueError(
            "`load_digits` argument `validation_split` must be in (0, 1). "
            f"Received: validation_split={validation_split!r}"
        )
    digits = sklearn_digits()
    images = (digits.images / 16.0).astype("float32")[..., None]
    if image_size != 8:
        import keras

        images = keras.ops.convert_to_numpy(
            keras.ops.image.resize(
                images,
                (image_size, image_size),
                interpolation="bilinear",
                data_format="channels_last",
            )
        ).astype("float32", copy=False)
    x = images.reshape(len(images), -1) if flatten else images
    y = digits.target.astype("int64")
    x_train, x_val, y_train, y_val = train_test_split(
        x, y, test_size=validation_split, random_state=seed, stratify=y
    )
    return (x_train, y_train), (x_val, y_val)
