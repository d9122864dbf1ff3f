"""``python -m satool`` (also what ``torchrun -m satool`` runs)."""

from satool.cli import main

if __name__ == "__main__":
    main()
