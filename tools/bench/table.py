"""Plain-text tables for benchmark output (no dependencies)."""


def render(title, headers, rows):
    cells = [[str(h) for h in headers]] + [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    line = "+".join("-" * (w + 2) for w in widths)
    out = [title, line]
    for n, row in enumerate(cells):
        out.append("|".join(" " + c.rjust(w) + " " if i else " " + c.ljust(w) + " "
                            for i, (c, w) in enumerate(zip(row, widths))))
        if n == 0:
            out.append(line)
    out.append(line)
    return "\n".join(out)


def _fmt(c):
    if isinstance(c, float):
        if c == 0 or abs(c) >= 100:
            return "%.0f" % c
        if abs(c) >= 1:
            return "%.2f" % c
        return "%.3g" % c
    return str(c)
