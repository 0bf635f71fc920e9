"""natural_key: numbered frames in number order (ordered frame folders played as video)."""

from __future__ import annotations

import random
from pathlib import Path

from endoedge.data.media import natural_key


def test_natural_key_orders_numbered_frames_by_number():
    names = [f"seq1_img{i}.jpg" for i in range(1, 120)]
    shuffled = random.Random(0).sample(names, len(names))
    assert sorted(shuffled, key=natural_key) == names
    assert sorted(["b/img2.png", "a/img10.png", "a/img9.png"], key=natural_key) == [
        "a/img9.png", "a/img10.png", "b/img2.png"]
    assert sorted([Path("IMG3.jpg"), Path("img2.jpg")], key=natural_key) == [Path("img2.jpg"), Path("IMG3.jpg")]

