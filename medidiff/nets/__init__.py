"""Networks: the 3D U-Net (MONAI DiffusionModelUNet), the diffusion-model wrapper, EMA and checkpoints."""
