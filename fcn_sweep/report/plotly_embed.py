"""plotly.js and the interactive parallel coordinates inside report.html, at a size that opens at once.

plotly.js is 4.9 MB of JavaScript, more than the rest of a 5,832-run report; gzipped it is 1.5 MB.
So the page carries it gzipped (base64 in an inert script element) and unpacks it with the
browser's own DecompressionStream (Chrome/Edge 80+, Firefox 113+, Safari 16.4+), still from the
one file, with no network. The figure's numbers travel as typed arrays (float32, base64), not as
decimal text: every run stays a line of the plot at a few bytes a value.

The plot is drawn once plotly.js is unpacked; `window.parallelDrawn` is a promise that settles then
(the browser test waits on it rather than on a clock). A browser without DecompressionStream shows
a line saying so, and figures/parallel.png is the same plot, static.
"""

from __future__ import annotations

import base64
import functools
import gzip
import json

import numpy as np

from . import analysis as an

PLOT_ID = "parallel-plot"
UNPACK = """<script>
window.plotlyReady = (async () => {
  const packed = atob(document.getElementById('plotly-gz').textContent.trim());
  const bytes = new Uint8Array(packed.length);
  for (let i = 0; i < packed.length; i++) bytes[i] = packed.charCodeAt(i);
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream('gzip'));
  const code = document.createElement('script');
  code.textContent = await new Response(stream).text();
  document.head.appendChild(code);
})();
</script>"""
DRAW = """<script>
window.parallelDrawn = ((figure) => window.plotlyReady.then(
  () => Plotly.newPlot('{id}', figure.data, figure.layout, {config}),
  () => {{ document.getElementById('{id}').textContent = 'This browser cannot unpack the embedded plotly.js '
    + '(it needs DecompressionStream: Chrome 80+, Firefox 113+, Safari 16.4+); figures/parallel.png is the '
    + 'same plot, static.'; }}))({figure});
</script>"""


@functools.cache
def _packed() -> str:
    import plotly.offline

    return base64.b64encode(gzip.compress(plotly.offline.get_plotlyjs().encode(), 9, mtime=0)).decode()


def head() -> str:
    """plotly.js, gzipped, and the script that unpacks it: once per page, in <head>."""
    return f"<script type='application/gzip' id='plotly-gz'>{_packed()}</script>{UNPACK}"


def parallel(axes: list[an.Axis], colorscale: str) -> str:
    """The interactive parallel coordinates of every run: a div and the script that draws it."""
    import plotly.graph_objects as go

    dims = []
    for a in axes:
        lo, hi = min(a.values + (a.tickvals or [])), max(a.values + (a.tickvals or []))
        d = {"label": a.label, "values": np.asarray(a.values, dtype=np.float32),
             "range": [lo, hi] if hi > lo else [lo - 0.5, hi + 0.5]}  # fmt: skip
        if a.tickvals is not None:
            d |= {"tickvals": a.tickvals, "ticktext": a.ticktext}
        dims.append(d)
    fig = go.Figure(
        go.Parcoords(
            line={
                "color": np.asarray(axes[-1].values, dtype=np.float32),
                "colorscale": colorscale,
                "showscale": True,
                "colorbar": {"title": {"text": "best val acc"}},
            },
            dimensions=dims,
            labelfont={"size": 13},
            tickfont={"size": 11},
        )
    )
    fig.update_layout(margin={"l": 70, "r": 40, "t": 60, "b": 30}, paper_bgcolor="white")
    config = json.dumps({"displaylogo": False, "responsive": True})
    # `</` never closes the script early: plotly's JSON writes it as `<\/`
    figure = fig.to_json().replace("</", "<\\/")
    return f"<div id='{PLOT_ID}'></div>" + DRAW.format(id=PLOT_ID, figure=figure, config=config)
