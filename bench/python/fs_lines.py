"""fslines: count the lines of FILE the way Python programs do,
`for line in open(f)` (text mode, as written in most scripts)."""
import sys


def main(path):
    n = 0
    with open(path) as f:
        for _ in f:
            n += 1
    print(f"sum={n}")


main(sys.argv[2])
