"""Training: MONAI data pipeline of random 3D patches, the denoising score-matching trainer, resume state."""
