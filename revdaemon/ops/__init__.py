"""Operations: logging, health, metrics, sd_notify and alerts."""
