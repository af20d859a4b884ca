"""The `medidiff` command line. Heavy imports (torch, MONAI) happen inside commands so `--help` is instant."""
