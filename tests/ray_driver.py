"""Driver for the two-node Ray test (run inside the test's private namespace): tiny references on the
cluster at ADDRESS; marks WORK/node2-ran when a run came back from a node other than the driver's."""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from test_executor import RUNS, tiny_recipe, tiny_splits  # noqa: E402

from unlearnx.executor import Execution, RayExecutor  # noqa: E402
from unlearnx.protocol import retrained_references  # noqa: E402

work, address = Path(sys.argv[1]), sys.argv[2]


class MarkOtherNode:
    def __init__(self, executor):
        self.executor = executor
        self.head = None

    def start(self, description, total):
        pass

    def advance(self, n=1):
        import ray

        self.head = self.head or ray.get_runtime_context().get_node_id()[:12]
        if any(node != self.head for node in self.executor.nodes):
            (work / "node2-ran").touch()


with RayExecutor(Execution(backend="ray", ray_address=address, workers=2, timing_runs=0)) as executor:
    result = retrained_references(tiny_splits(), "small", tiny_recipe(), RUNS, cache_dir=work / "cache",
                                  executor=executor, progress=MarkOtherNode(executor))
    (work / "result.json").write_text(json.dumps({"n": result.n, "placement": result.placement,
                                                  "confs": result.confs.tolist()}))
print("driver done")
