"""Use cases over the registry and the specialists: data, train, evaluate, promote, gc, quickstart.

    >>> from niche.workflows import DataSpec, curate_data, promote, train_and_register
    >>> curated = curate_data(DataSpec(dataset="banking77"))
    >>> model = train_and_register(curated.version, task="banking77")
    >>> promote("banking77", model.version).moved
    True

Each function is one use case: it takes plain arguments, ``settings`` and a ``registry``
keyword (built from the settings when omitted), and returns records or a result with
``to_dict()``. The CLI and, next, the closed loop (distil, monitor, retrain) call these; the
gateway does not, nor do these call the gateway. A caller's bad argument raises
:class:`~niche.errors.ValidationError`; a refused gate is an outcome, turned into
:class:`~niche.errors.GateRefusedError` by :meth:`PromotionOutcome.raise_for_refusal`.
"""

from niche.workflows.alerts import (
    AlertWebhooks,
    alert_payloads,
    alert_webhooks,
    flush_alert_webhooks,
    list_alerts,
)
from niche.workflows.audit import audit_events
from niche.workflows.data import (
    DEFAULT_DATASET,
    CuratedData,
    DataSpec,
    LoadedData,
    curate_data,
    inspect_data,
    load_data,
    open_dataset,
    save_dataset,
)
from niche.workflows.demo import DemoResult, demo_loop
from niche.workflows.distil import DistilledData, distil
from niche.workflows.evaluate import (
    EvaluationReport,
    evaluate_model,
    evaluate_predictor,
    evaluate_registered,
    general_model_of,
    general_predictor,
    measuring_encoder,
    record_evaluation,
    training_data,
    uncached_encoder,
    zero_shot_baseline,
)
from niche.workflows.feedback import (
    FeedbackResult,
    LabelledId,
    read_labels_file,
    send_feedback,
    send_feedback_file,
)
from niche.workflows.gc import GarbageCollected, collect_garbage
from niche.workflows.general import GeneralCheck, check_general
from niche.workflows.loop import LoopDecision, loop_once, run_loop
from niche.workflows.loop_policy import LoopFacts
from niche.workflows.models import lineage, load_specialist, register_trained, show_model
from niche.workflows.monitor import MonitorReport, monitor, parse_window
from niche.workflows.portfolio import PortfolioResult, PortfolioTask, build_portfolio
from niche.workflows.promote import PromotionOutcome, held_out_overlap, promote
from niche.workflows.quickstart import QuickstartResult, quickstart
from niche.workflows.replay import ReplayResult, replay
from niche.workflows.retrain import Retrained, train_evaluate_promote
from niche.workflows.tasks import create_task, edit_task, parse_changes, show_task
from niche.workflows.traffic import (
    GENERAL_ROUTES,
    PrunedTraffic,
    answered,
    count_traffic,
    dead_letters,
    list_traffic,
    parse_since,
    prune_traffic,
)
from niche.workflows.train import ensure_task_for, task_name_for, train_and_register

__all__ = [
    "DEFAULT_DATASET",
    "GENERAL_ROUTES",
    "AlertWebhooks",
    "CuratedData",
    "DataSpec",
    "DemoResult",
    "DistilledData",
    "EvaluationReport",
    "FeedbackResult",
    "GarbageCollected",
    "GeneralCheck",
    "LabelledId",
    "LoadedData",
    "LoopDecision",
    "LoopFacts",
    "MonitorReport",
    "PortfolioResult",
    "PortfolioTask",
    "PromotionOutcome",
    "PrunedTraffic",
    "QuickstartResult",
    "ReplayResult",
    "Retrained",
    "alert_payloads",
    "alert_webhooks",
    "answered",
    "audit_events",
    "build_portfolio",
    "check_general",
    "collect_garbage",
    "count_traffic",
    "create_task",
    "curate_data",
    "dead_letters",
    "demo_loop",
    "distil",
    "edit_task",
    "ensure_task_for",
    "evaluate_model",
    "evaluate_predictor",
    "evaluate_registered",
    "flush_alert_webhooks",
    "general_model_of",
    "general_predictor",
    "held_out_overlap",
    "inspect_data",
    "lineage",
    "list_alerts",
    "list_traffic",
    "load_data",
    "load_specialist",
    "loop_once",
    "measuring_encoder",
    "monitor",
    "open_dataset",
    "parse_changes",
    "parse_since",
    "parse_window",
    "promote",
    "prune_traffic",
    "quickstart",
    "read_labels_file",
    "record_evaluation",
    "register_trained",
    "replay",
    "run_loop",
    "save_dataset",
    "send_feedback",
    "send_feedback_file",
    "show_model",
    "show_task",
    "task_name_for",
    "train_and_register",
    "train_evaluate_promote",
    "training_data",
    "uncached_encoder",
    "zero_shot_baseline",
]
