"""Synthetic document pages for the GPU benchmark (deterministic).

Same pages as the GPU bundle's ``make_doc_pages.py`` (white A4 at 150 dpi, 1240x1754, a
title, paragraphs, now and then a table, a page number, scanner-like noise), so results
compare with its reference numbers. Same seed and Pillow version -> same pages.

Usage: python -m tests.gpu.doc_pages OUT_DIR [--n 128] [--first 0] [--seed 0]
"""

from __future__ import annotations

import argparse
import os
import random
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

WIDTH, HEIGHT = 1240, 1754
WORDS = (  # noqa: SIM905 - the word list reads best as text
    "the of and to in is that for it as was with be by on not he this are or his "
    "from at which but have an they you were her all she there would their we him "
    "been has when who will more no if out so said what up its about into than them "
    "can only other new some could time these two may then do first any my now such "
    "like our over man me even most made after also did many before must through "
    "back years where much your way well down should because each just those people "
    "how too little state good very make world still own see men work long get here "
    "between both life being under never day same another know while last might us "
    "great old year off come since against go came right used take three invoice "
    "total amount quarter revenue section table figure appendix contract party "
    "agreement clause shall payment report analysis summary result"
).split()


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def make_page(index: int, seed: int = 0) -> Image.Image:
    rng = random.Random(seed * 100003 + index)
    img = Image.new("L", (WIDTH, HEIGHT), 255)
    draw = ImageDraw.Draw(img)
    title_f, body_f, small_f = _font(40), _font(22), _font(18)
    margin, y = 100, 90
    title = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 7))).title()
    draw.text((margin, y), title, font=title_f, fill=0)
    y += 80
    while y < HEIGHT - 160:
        if rng.random() < 0.15 and y < HEIGHT - 450:  # a table
            rows, cols = rng.randint(4, 8), rng.randint(3, 5)
            cw, rh = (WIDTH - 2 * margin) // cols, 34
            for r in range(rows + 1):
                draw.line([(margin, y + r * rh), (WIDTH - margin, y + r * rh)], fill=0)
            for c in range(cols + 1):
                x = margin + c * cw
                draw.line([(x, y), (x, y + rows * rh)], fill=0)
            for r in range(rows):
                for c in range(cols):
                    cell = (
                        rng.choice(WORDS) if r == 0 else f"{rng.uniform(0, 9999):.2f}"
                    )
                    xy = (margin + c * cw + 8, y + r * rh + 7)
                    draw.text(xy, cell, font=small_f, fill=0)
            y += rows * rh + 40
            continue
        for _ in range(rng.randint(3, 9)):  # a paragraph
            line: list[str] = []
            x = 0
            while True:
                word = rng.choice(WORDS)
                x += (len(word) + 1) * 11
                if x > WIDTH - 2 * margin:
                    break
                line.append(word)
            draw.text((margin, y), " ".join(line), font=body_f, fill=rng.randint(0, 40))
            y += 32
            if y >= HEIGHT - 160:
                break
        y += 24
    draw.text((WIDTH // 2 - 20, HEIGHT - 80), f"- {index + 1} -", font=small_f, fill=0)
    pixels = np.asarray(img, dtype=np.int16)
    noise = np.random.default_rng(seed * 100003 + index)
    pixels = pixels + noise.normal(0, 6, pixels.shape).astype(np.int16)  # sensor noise
    speck = noise.random(pixels.shape) < 0.0015  # dust specks
    pixels[speck] = noise.integers(0, 120, int(speck.sum()))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "L").convert("RGB")


def _write(job: tuple[str, int, int]) -> str:
    out, index, seed = job
    path = os.path.join(out, f"page_{index:03d}.png")
    make_page(index, seed).save(path, optimize=False, compress_level=1)
    return path


def write_pages(
    out: Path, indices: range, seed: int = 0, workers: int = 0
) -> list[Path]:
    """Write ``page_NNN.png`` for each index (skipping files already there)."""
    out.mkdir(parents=True, exist_ok=True)
    jobs = [
        (str(out), i, seed) for i in indices if not (out / f"page_{i:03d}.png").exists()
    ]
    if jobs:
        with Pool(workers or min(8, os.cpu_count() or 1)) as pool:
            pool.map(_write, jobs)
    return [out / f"page_{i:03d}.png" for i in indices]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--n", type=int, default=128)
    parser.add_argument("--first", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    paths = write_pages(args.out, range(args.first, args.first + args.n), args.seed)
    total = sum(p.stat().st_size for p in paths)
    print(f"wrote {len(paths)} pages to {args.out} ({total / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
