"""Widgets: the augmentation explorer (notebook 02) and the photo upload (notebook 07).

**Augmentation explorer.**

`augmentation_explorer` returns an ipywidgets panel: four sliders for the area fraction
(``scale``) and aspect-ratio (``ratio``) ranges of ``RandomResizedCrop``, a ``flip``
checkbox, a *resample* button and a *book defaults* button. Every change redraws, live, the
photo with the sampled crop boxes and the views the network would be fed.

The crops are drawn with ``mxnet.image.random_size_crop``, the very function Gluon's
``transforms.RandomResizedCrop`` calls, so the explorer shows the training pipeline and not
an imitation of it. The randomness comes from Python's ``random`` (crop boxes and flips),
so `runtime.seed_everything` makes the first drawing reproducible.

It works without a browser: the picture is drawn once when the explorer is built, kept as
arrays (``last_views``, ``last_boxes``) and JPEG bytes (``last_image``; photos compress far
better as JPEG than PNG, which keeps executed notebooks small), and also offered as an
``image/jpeg`` fallback, so an executed notebook shows it where widgets cannot be rendered.

**Photo upload.** `photo_upload` returns a file-upload button with its own output area. An
uploaded file is decoded by `data.decode_image` (EXIF orientation, 16-bit and other modes
handled), handed to your function, and what the function displays or prints appears in that
area. A file that is not a photo, an empty file or one over Pillow's size limit shows an
error there, naming the uploaded file and what to do, instead of a traceback elsewhere.

Like `plots`, this is a top layer (ipywidgets and matplotlib), imported only by notebooks.

Example:
    >>> from d2l_helpers import widgets
    >>> explorer = widgets.augmentation_explorer(img, 160, spec.mean, spec.std)  # doctest: +SKIP
    >>> explorer                              # displays the panel             # doctest: +SKIP
"""
from __future__ import annotations

import base64
import io
import random
from collections.abc import Sequence

import ipywidgets as W
import numpy as onp

# RandomResizedCrop's defaults, the book's (and Inception's) choice.
BOOK_SCALE = (0.08, 1.0)
BOOK_RATIO = (3 / 4, 4 / 3)
SLIDER_NAMES = ("scale min", "scale max", "ratio min", "ratio max")


def _as_mx(image):
    """HWC uint8 image as an MXNet array of the active flavour (``np`` or legacy ``nd``)."""
    from .arrays import array

    arr = image.asnumpy() if hasattr(image, "asnumpy") else onp.asarray(image)
    return array(onp.ascontiguousarray(arr, dtype=onp.uint8), dtype="uint8")


def sample_views(image, size: int, scale: Sequence[float], ratio: Sequence[float],
                 flip: bool, num: int, mean: Sequence[float], std: Sequence[float]):
    """``num`` training views of ``image``: crop, maybe flip, ``ToTensor``, ``Normalize``.

    Returns ``(views, boxes, flipped)``: views as an (num, size, size, 3) float array in
    [0, 1] (normalisation undone for display), crop boxes ``(x0, y0, w, h)`` in the photo's
    pixels, and which views were mirrored.
    """
    from mxnet import image as mx_image
    from mxnet.gluon.data.vision import transforms as T

    from .plots import denormalize
    from .transforms import normalize

    src = _as_mx(image)
    to_tensor = T.Compose([T.ToTensor(), normalize(mean, std)])
    views, boxes, flipped = [], [], []
    for _ in range(num):
        # interp=1 (bilinear), as transforms.RandomResizedCrop passes it.
        out, box = mx_image.random_size_crop(src, (size, size), tuple(scale), tuple(ratio), 1)
        view = denormalize(to_tensor(out), mean, std)
        # A left-right flip commutes with ToTensor/Normalize (per-pixel), so flipping the
        # displayed array equals RandomFlipLeftRight before them (probability 1/2).
        f = bool(flip) and random.random() < 0.5
        views.append(view[:, ::-1] if f else view)
        boxes.append(tuple(int(v) for v in box))
        flipped.append(f)
    return onp.stack(views), boxes, flipped


def _render(image, views, boxes, flipped, dpi: int = 80) -> bytes:
    """JPEG of the photo with numbered crop boxes, beside the views the net sees."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    photo = image.asnumpy() if hasattr(image, "asnumpy") else onp.asarray(image)
    h, w = photo.shape[:2]
    n = len(views)
    cols = (n + 1) // 2
    fig = Figure(figsize=(3.0 + 1.45 * cols, 3.3), dpi=dpi, layout="constrained")
    grid = fig.add_gridspec(2, cols + 2)
    ax = fig.add_subplot(grid[:, :2])
    ax.imshow(photo)
    ax.set_title(f"photo {w}x{h}: crop boxes", fontsize=9)
    ax.axis("off")
    colors = [f"C{i % 10}" for i in range(n)]
    for i, (x0, y0, bw, bh) in enumerate(boxes):
        ax.add_patch(Rectangle((x0, y0), bw, bh, fill=False, lw=1.5, ec=colors[i]))
        ax.text(x0 + 3, y0 + 3, str(i + 1), color=colors[i], fontsize=8, va="top",
                fontweight="bold")
    for i, view in enumerate(views):
        a = fig.add_subplot(grid[i // cols, 2 + i % cols])
        a.imshow(view)
        x0, y0, bw, bh = boxes[i]
        a.set_title(f"{i + 1}: {bw * bh / (w * h):.0%}, {bw / bh:.2f}" + (" ↔" if flipped[i] else ""),
                    fontsize=7, color=colors[i])
        a.axis("off")
    buf = io.BytesIO()
    fig.savefig(buf, format="jpeg", pil_kwargs={"quality": 85})
    return buf.getvalue()


class AugmentationExplorer(W.VBox):
    """The panel `augmentation_explorer` returns (a ``VBox``); see that function.

    Attributes: ``sliders`` (dict by description), ``flip``, ``resample_button``,
    ``defaults_button``, ``image_widget``, and the last drawing: ``last_views``,
    ``last_boxes``, ``last_flipped``, ``last_image`` (JPEG bytes), ``draw_count``.
    """

    def __init__(self, image, size: int, mean: Sequence[float], std: Sequence[float],
                 num_views: int = 8):
        self.photo, self.size, self.mean, self.std = image, int(size), mean, std
        self.num_views = int(num_views)
        self.draw_count, self._hold = 0, False
        style, layout = {"description_width": "70px"}, W.Layout(width="300px")
        common = dict(continuous_update=False, style=style, layout=layout)
        self.sliders = {
            "scale min": W.FloatSlider(value=BOOK_SCALE[0], min=0.01, max=1.0, step=0.01,
                                       description="scale min", readout_format=".2f", **common),
            "scale max": W.FloatSlider(value=BOOK_SCALE[1], min=0.01, max=1.0, step=0.01,
                                       description="scale max", readout_format=".2f", **common),
            # Aspect ratios are sampled log-uniformly, so the sliders are logarithmic too.
            "ratio min": W.FloatLogSlider(value=BOOK_RATIO[0], base=2, min=-2, max=2, step=0.05,
                                          description="ratio min", readout_format=".2f", **common),
            "ratio max": W.FloatLogSlider(value=BOOK_RATIO[1], base=2, min=-2, max=2, step=0.05,
                                          description="ratio max", readout_format=".2f", **common),
        }
        self.flip = W.Checkbox(value=True, description="flip", indent=False,
                               layout=W.Layout(width="70px"))
        self.resample_button = W.Button(description="resample", icon="refresh",
                                        tooltip="draw new random crops with these settings",
                                        layout=W.Layout(width="110px"))
        self.defaults_button = W.Button(description="book defaults",
                                        tooltip="area 8-100 %, aspect ratio 3/4-4/3",
                                        layout=W.Layout(width="120px"))
        self.status = W.HTML()
        self.image_widget = W.Image(format="jpeg")
        for s in self.sliders.values():
            s.observe(self._on_change, names="value")
        self.flip.observe(self._on_change, names="value")
        self.resample_button.on_click(lambda _: self.redraw())
        self.defaults_button.on_click(lambda _: self.reset())
        sl = self.sliders
        super().__init__(children=[
            W.HBox([sl["scale min"], sl["scale max"]]),
            W.HBox([sl["ratio min"], sl["ratio max"]]),
            W.HBox([self.flip, self.resample_button, self.defaults_button]),
            self.status, self.image_widget])
        self.redraw()

    def ranges(self) -> tuple[tuple[float, float], tuple[float, float]]:
        """The (scale, ratio) ranges in force; a min above its max is swapped."""
        v = {k: s.value for k, s in self.sliders.items()}
        scale = tuple(sorted((v["scale min"], v["scale max"])))
        ratio = tuple(sorted((v["ratio min"], v["ratio max"])))
        return scale, ratio

    def _on_change(self, _change=None) -> None:
        if not self._hold:
            self.redraw()

    def reset(self) -> None:
        """Back to the book's ranges and flipping, redrawn once."""
        self._hold = True
        try:
            for name, value in zip(SLIDER_NAMES, BOOK_SCALE + BOOK_RATIO):
                self.sliders[name].value = value
            self.flip.value = True
        finally:
            self._hold = False
        self.redraw()

    def redraw(self) -> None:
        """Sample new views with the current settings and show them."""
        scale, ratio = self.ranges()
        views, boxes, flipped = sample_views(self.photo, self.size, scale, ratio,
                                             self.flip.value, self.num_views, self.mean, self.std)
        self.last_views, self.last_boxes, self.last_flipped = views, boxes, flipped
        self.last_image = _render(self.photo, views, boxes, flipped)
        self.image_widget.value = self.last_image
        self.draw_count += 1
        swapped = (self.sliders["scale min"].value > self.sliders["scale max"].value
                   or self.sliders["ratio min"].value > self.sliders["ratio max"].value)
        self.status.value = (
            f"<small>area {scale[0]:.0%}&ndash;{scale[1]:.0%} of the photo, aspect ratio "
            f"{ratio[0]:.2f}&ndash;{ratio[1]:.2f}, {'random flip' if self.flip.value else 'no flip'}"
            f"; each view resized to {self.size}x{self.size}. Titles: view, area, ratio"
            f" (&harr; = mirrored)." + (" A min above its max was swapped." if swapped else "")
            + "</small>")

    def _repr_mimebundle_(self, **kwargs):
        data = super()._repr_mimebundle_(**kwargs)
        # A static picture for viewers that cannot render widgets (GitHub, nbconvert HTML).
        data["image/jpeg"] = base64.b64encode(self.last_image).decode("ascii")
        return data


def augmentation_explorer(image, size: int, mean: Sequence[float], std: Sequence[float],
                          num_views: int = 8) -> W.Widget:
    """An interactive panel to explore ``RandomResizedCrop`` and the random flip on one photo.

    Args:
        image: an HWC ``uint8`` photo (NumPy or MXNet array), e.g. ``HotdogImages(...)[0][0]``.
        size: the crop size the network sees (the profile's ``image_size``).
        mean, std: the backbone's normalisation (`backbones.backbone_spec`); the views are
            normalised as in training and the normalisation is undone for display.
        num_views: how many random views each drawing shows.

    Returns:
        An `AugmentationExplorer` (an ``ipywidgets.VBox``) with sliders described
        ``"scale min"``, ``"scale max"`` (area fraction of the photo), ``"ratio min"``,
        ``"ratio max"`` (crop width / height), a ``"flip"`` checkbox, a *resample* and a
        *book defaults* button. It starts at the book's settings and has drawn once already,
        so it also works headless; the last drawing is in ``last_views``/``last_boxes``.
    """
    return AugmentationExplorer(image, size, mean, std, num_views=num_views)


class PhotoUpload(W.VBox):
    """The panel `photo_upload` returns: ``upload`` (``FileUpload``) above ``output``.

    ``handle(name, content)`` decodes and classifies one file as an upload does; it is what
    the upload button calls, and what tests and scripts call without a browser.
    """

    def __init__(self, on_photo, short_side: int | None = None, description: str = "photo"):
        self.on_photo, self.short_side = on_photo, short_side
        self.upload = W.FileUpload(accept="image/*", multiple=False, description=description)
        self.output = W.Output()
        self.errors: list[str] = []
        self.upload.observe(self._on_value, names="value")
        super().__init__([self.upload, self.output])

    def _on_value(self, change) -> None:
        self.output.clear_output()
        for f in change["new"]:
            self.handle(f["name"], bytes(f["content"]))

    def handle(self, name: str, content: bytes):
        """Decode ``content`` (the bytes of file ``name``) and call ``on_photo(image, name)``
        inside the output area. Returns what it returned, or None after showing an error."""
        from .data import HotdogDataError, decode_image

        with self.output:
            try:
                image = decode_image(content, name, self.short_side)
            except HotdogDataError as err:
                message = (f"{err}\nUpload a photo instead: a JPEG, PNG, WebP or TIFF file "
                           "from your camera or the web.")
                self.errors.append(message)
                print(message)
                return None
            return self.on_photo(image, name)


def photo_upload(on_photo, short_side: int | None = None) -> PhotoUpload:
    """A file-upload button whose photos go to ``on_photo(image, name)``; errors show below it.

    ``image`` is an HWC ``uint8`` RGB array (upright, 8-bit), ``name`` the uploaded file's
    name; ``short_side`` shrinks large photos on decoding, as the data set's photos are.

    Example:
        >>> seen = []
        >>> panel = photo_upload(lambda image, name: seen.append((name, image.shape)))
        >>> panel.handle("notes.txt", b"not a photo")  # printed in the panel  # doctest: +ELLIPSIS
        Cannot decode image notes.txt: ...
        Upload a photo instead: a JPEG, PNG, WebP or TIFF file from your camera or the web.
        >>> seen
        []
    """
    return PhotoUpload(on_photo, short_side)
