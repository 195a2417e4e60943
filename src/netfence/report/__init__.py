"""`netfence report`: one self-contained HTML file to read a cluster's connectivity.

The file holds a namespace-grouped graph of workloads and allowed connections, the
connectivity matrix as a heat map, the explanation of any clicked pair, the `check` findings,
the `diff` against older manifests and a summary. It needs no network access to open: its
style, script, graph library and data are inline, and its Content-Security-Policy forbids
any fetch (scripts are allowed by hash, so nothing injected could run either).

Why Cytoscape.js for the graph: compound nodes (a namespace box holding its workloads) and
collapsing them are what a namespace-grouped graph needs, and it brings zoom, pan, hit
testing of edges and a force layout for compound graphs in one dependency-free file; it is
MIT-licensed, released steadily, and drawn on a canvas, so thousands of elements stay
smooth. d3 would leave hit testing, compound layout and canvas drawing to us; server-side
SVG would make every view a fixed picture (no collapsing, no search) and grows with the
cluster. The matrix, which is a plain grid, is drawn by our own few lines on a canvas,
only the visible cells at a time.

How the library is bundled: `assets/cytoscape.min.js` (with its licence,
`assets/cytoscape.LICENSE`) is vendored into the package, taken unmodified from the npm
package's `dist/` folder; `assets/vendor.json` pins the version, the registry's integrity
hash and the file's sha256. `scripts/refresh-report-assets [VERSION]` fetches a release with
`npm pack` (which checks the registry's integrity hash), copies the file and the licence and
rewrites the pin; a test checks the file against the pin. This keeps `pip install netfence`
self-sufficient: no Node.js at install or run time, no network when a report is written.

Scale: a 5,000-pod cluster is about 1,400 workloads and 150,000 allowed pairs. The page
starts from namespaces (collapsed graph nodes with aggregated edges, namespace blocks in the
matrix) and opens what is asked for: a namespace on double-click, a workload found by search,
a block of the matrix on click. See `model` for how explanations stay small.
"""
