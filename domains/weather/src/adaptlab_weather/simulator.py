"""An idealised mid-latitude flow with blocking-like events, run by the plugin itself: the
plentiful source of the weather seed paper's recipe ("train on a simulator first, then adapt
to observations").

The field is a 500 hPa-height-like anomaly (metres) on a lat x lon channel, periodic in
longitude. It holds eastward-travelling Rossby-wave-like modes with red-noise amplitudes,
transient ridges that travel east and live a few days, and blocks: quasi-stationary highs
whose life is drawn from a geometric law, growing then decaying. The label of day ``t`` is
the persistence label: a block is present at ``t`` and will still be there
``persistence_days`` later. Everything is drawn from one seeded generator: the same seed
gives the same fields, byte for byte.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class FlowConfig:
    lat: int = 16
    lon: int = 32
    wavenumbers: tuple[int, ...] = (3, 4, 5, 6, 7)
    wave_speed: float = 0.35  # longitude cells per day, for wavenumber 3 (faster for higher)
    wave_amplitude: float = 50.0
    wave_memory: float = 0.9  # lag-one autocorrelation of the mode amplitudes
    block_rate: float = 0.1  # block onsets per day
    block_mean_days: float = 7.0
    block_amplitude: float = 160.0
    ridge_rate: float = 0.2  # transient ridge onsets per day
    ridge_amplitude: float = 120.0
    width: float = 2.5  # anomaly radius, in grid cells
    noise: float = 12.0
    smoothing: int = 0  # observation-like smoothing passes (0: none)
    persistence_days: int = 5


@dataclass(frozen=True)
class _Anomaly:
    start: int
    days: int
    lat: float
    lon: float
    amplitude: float
    speed: float  # cells per day eastward
    block: bool


def _anomalies(days: int, config: FlowConfig, rng: np.random.Generator) -> list[_Anomaly]:
    found = []
    for block, rate in ((True, config.block_rate), (False, config.ridge_rate)):
        for start in np.flatnonzero(rng.random(days) < rate):
            life = int(rng.geometric(1 / config.block_mean_days)) if block else \
                int(rng.integers(2, 5))
            found.append(_Anomaly(
                start=int(start), days=max(1, life),
                lat=float(rng.uniform(0.35, 0.7) * config.lat),
                lon=float(rng.uniform(0, config.lon)),
                amplitude=float((config.block_amplitude if block else config.ridge_amplitude)
                                * rng.uniform(0.7, 1.3)),
                speed=float(rng.uniform(-0.1, 0.15) if block else rng.uniform(1.0, 2.5)),
                block=block))
    return found


def simulate(days: int, config: FlowConfig = FlowConfig(), seed: int = 0
             ) -> tuple[np.ndarray, np.ndarray]:
    """``days`` daily fields (days, lat, lon) float32 in metres, and the persistence label
    per day (1: a block present now is still present ``persistence_days`` later)."""
    rng = np.random.default_rng(seed)
    lat = np.arange(config.lat)[:, None]
    lon = np.arange(config.lon)[None, :]
    envelope = np.sin(np.pi * (lat + 0.5) / config.lat)
    modes = len(config.wavenumbers)
    amplitude = rng.normal(0, 1, modes)
    phase = rng.uniform(0, 2 * np.pi, modes)
    anomalies = _anomalies(days, config, rng)
    fields = np.empty((days, config.lat, config.lon), dtype=np.float32)
    labels = np.zeros(days, dtype=np.int64)
    for day in range(days):
        amplitude = config.wave_memory * amplitude + np.sqrt(1 - config.wave_memory ** 2) * \
            rng.normal(0, 1, modes)
        field = np.zeros((config.lat, config.lon))
        for k, a, p in zip(config.wavenumbers, amplitude, phase, strict=True):
            speed = config.wave_speed * k / config.wavenumbers[0]
            field += config.wave_amplitude * a * envelope * np.cos(
                2 * np.pi * k * (lon - speed * day) / config.lon + p)
        for event in anomalies:
            age = day - event.start
            if not 0 <= age < event.days:
                continue
            centre = (event.lon + event.speed * age) % config.lon
            distance_lon = np.minimum(np.abs(lon - centre), config.lon - np.abs(lon - centre))
            shape = np.exp(-((lat - event.lat) ** 2 + distance_lon ** 2) / (2 * config.width ** 2))
            field += event.amplitude * np.sin(np.pi * (age + 0.5) / event.days) * shape
            if event.block and event.days - age > config.persistence_days:
                labels[day] = 1
        field += rng.normal(0, config.noise, field.shape)
        for _ in range(config.smoothing):
            field = (field + np.roll(field, 1, 1) + np.roll(field, -1, 1)) / 3
        fields[day] = field
    return fields, labels
