"""Interactive views for the notebooks (ipywidgets). Each view keeps what it last drew in `state`, so
tests can set a control's value and check the redraw without a browser."""
from __future__ import annotations

import time

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from IPython.display import display

from .models.families import AdapterFamily, task_accuracies
from .models.latent import LatentGenerator, principal_directions
from .taskdata import TaskTensors


def answer_distributions(weight_gen: LatentGenerator, adapter: AdapterFamily, tasks: TaskTensors, task: int,
                         z: torch.Tensor) -> dict:
    """Decode z, score it on `task`'s query set: accuracy (%), predicted and true answer shares."""
    batch = tasks.fixed_batch(torch.tensor([task]))
    with torch.no_grad():
        logits = adapter.logits({}, weight_gen.decode(z[None]), batch.x, batch)
    n_answers = int(batch.answer_mask[0].sum())
    query = batch.query[0].bool()
    predicted = torch.bincount(logits[0].argmax(-1)[query], minlength=n_answers)[:n_answers].float()
    true = torch.bincount(batch.labels[0][query], minlength=n_answers)[:n_answers].float()
    return {"accuracy": task_accuracies(logits, batch.labels, batch.query)[0].item(),
            "predicted": (predicted / predicted.sum()).tolist(), "true": (true / true.sum()).tolist()}


def principal_walk(weight_gen: LatentGenerator, latents: torch.Tensor, scorer: AdapterFamily, tasks: TaskTensors,
                   n_tasks: int = 4, span: float = 3.0, points: int = 13) -> pd.DataFrame:
    """Query accuracy (%) of the decoded mean latent moved along the first principal direction (in units
    of the spread along it), for the first `n_tasks` tasks: rows PC1 position, columns tasks."""
    mean, directions, spread = principal_directions(latents, 1)
    rows = []
    for task in range(min(n_tasks, len(tasks))):
        for c in torch.linspace(-span, span, points).tolist():
            result = answer_distributions(weight_gen, scorer, tasks, task, mean + c * spread[0] * directions[0])
            rows.append({"task": tasks.questions[task], "PC1 (s.d.)": c, "accuracy": result["accuracy"]})
    return pd.DataFrame(rows).pivot(index="PC1 (s.d.)", columns="task", values="accuracy")


class LatentTraversal:
    """Sliders along the principal directions of the training latents; shows, live, the decoded
    network's predicted-answer distribution on a chosen task's query images and its accuracy."""

    def __init__(self, weight_gen: LatentGenerator, latents: torch.Tensor, adapter: AdapterFamily, tasks: TaskTensors,
                 answers: list[list[str]], n_directions: int = 3, span: float = 3.0):
        self.weight_gen, self.adapter, self.tasks, self.answers = weight_gen, adapter, tasks, answers
        self.mean, self.directions, self.spread = principal_directions(latents, n_directions)
        self.task = widgets.Dropdown(options=[(q, i) for i, q in enumerate(tasks.questions)], value=0,
                                     description="task", layout=widgets.Layout(width="95%"))
        self.sliders = [widgets.FloatSlider(value=0.0, min=-span, max=span, step=0.25,
                                            description=f"PC{k + 1} (s.d.)", continuous_update=False)
                        for k in range(len(self.directions))]
        self.readout = widgets.HTML()   # the accuracy as text, for readers and for the browser check
        self.output = widgets.Output()
        self.state: dict = {}
        for control in [self.task, *self.sliders]:
            control.observe(lambda change: self.redraw(), names="value")
        self.redraw()

    def latent(self) -> torch.Tensor:
        coeffs = torch.tensor([s.value for s in self.sliders], dtype=self.mean.dtype)
        return self.mean + (coeffs * self.spread) @ self.directions

    def redraw(self) -> None:
        result = answer_distributions(self.weight_gen, self.adapter, self.tasks, self.task.value, self.latent())
        self.state = {"task": self.task.value, "coefficients": [s.value for s in self.sliders], **result}
        position = ", ".join(f"PC{k + 1} {v:+g}" for k, v in enumerate(self.state["coefficients"]))
        self.readout.value = f"<b>decoded network at {position} s.d.: accuracy {result['accuracy']:.1f}%</b>"
        names = self.answers[self.task.value]
        with self.output:
            self.output.clear_output(wait=True)
            fig, ax = plt.subplots(figsize=(7, 2.8))
            x = np.arange(len(names))
            ax.bar(x - 0.2, result["true"], 0.4, color="0.6", label="true answers")
            ax.bar(x + 0.2, result["predicted"], 0.4, color="tab:blue", label="decoded network's answers")
            ax.set_xticks(x, names, rotation=30, ha="right")
            ax.set(ylabel="share of query images", ylim=(0, 1),
                   title=f"{self.tasks.questions[self.task.value]}\n{position} s.d.: accuracy {result['accuracy']:.1f}%")
            ax.legend(fontsize=8)
            fig.tight_layout()
            plt.show()
            self.figure = fig
            plt.close(fig)

    def show(self) -> None:
        display(widgets.VBox([self.task, *self.sliders, self.readout, self.output]))


class GammaExplorer:
    """Pick a meta-test task and a guidance scale γ: freshly sampled HyperLDM networks for that task, their
    mean accuracy, their predicted-answer distribution against the true one, and where their latents fall
    among the training latents (first two principal directions, as notebook 03)."""

    def __init__(self, sampler, weight_gen: LatentGenerator, adapter: AdapterFamily, tasks: TaskTensors,
                 answers: list[list[str]], train_latents: torch.Tensor, n_samples: int = 4, seed: int = 0,
                 task: int = 0):
        self.sampler, self.weight_gen, self.adapter, self.tasks, self.answers = sampler, weight_gen, adapter, tasks, answers
        self.n_samples, self.seed = n_samples, seed
        self.mean, self.directions, _ = principal_directions(train_latents, 2)
        self.background = ((train_latents - self.mean) @ self.directions.T).numpy()
        self.task = widgets.Dropdown(options=[(q, i) for i, q in enumerate(tasks.questions)], value=task,
                                     description="task", layout=widgets.Layout(width="95%"))
        self.gamma = widgets.FloatSlider(value=1.0, min=0.0, max=4.0, step=0.25, description="γ",
                                         continuous_update=False)
        self.readout = widgets.HTML()
        self.output = widgets.Output()
        self.state: dict = {}
        for control in (self.task, self.gamma):
            control.observe(lambda change: self.redraw(), names="value")
        self.redraw()

    def draw_networks(self, task: int, gamma: float) -> tuple[torch.Tensor, list[dict]]:
        """What the view shows for (task, γ): the sampled latents and each decoded network's answers."""
        cond = self.tasks.text[[task] * self.n_samples]
        z = self.sampler(cond, torch.full((self.n_samples,), gamma), torch.Generator().manual_seed(self.seed))
        return z, [answer_distributions(self.weight_gen, self.adapter, self.tasks, task, zi) for zi in z]

    def most_moved_task(self, candidates: list[int]) -> int:
        """Of `candidates`, the task whose drawn networks' mean accuracy differs most between the slider's ends
        (γ = 0 and its maximum): where moving it shows guidance at work."""
        def accuracy(task: int, gamma: float) -> float:
            return float(np.mean([r["accuracy"] for r in self.draw_networks(task, gamma)[1]]))
        return max(candidates, key=lambda t: abs(accuracy(t, self.gamma.max) - accuracy(t, self.gamma.min)))

    def redraw(self) -> None:
        start = time.perf_counter()
        task, gamma = self.task.value, float(self.gamma.value)
        z, results = self.draw_networks(task, gamma)
        predicted = np.mean([r["predicted"] for r in results], axis=0)
        self.state = {"task": task, "gamma": gamma, "accuracy": float(np.mean([r["accuracy"] for r in results])),
                      "accuracies": [r["accuracy"] for r in results], "predicted": predicted.tolist(),
                      "true": results[0]["true"]}
        self.readout.value = (f"<b>γ = {gamma:g}: accuracy {self.state['accuracy']:.1f}% "
                              f"(mean of {self.n_samples} sampled networks)</b>")
        names = self.answers[task]
        with self.output:
            self.output.clear_output(wait=True)
            fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.2), gridspec_kw={"width_ratios": [3, 2]})
            x = np.arange(len(names))
            a.bar(x - 0.2, self.state["true"], 0.4, color="0.6", label="true answers")
            a.bar(x + 0.2, predicted, 0.4, color="tab:purple", label=f"{self.n_samples} sampled networks")
            a.set_xticks(x, names, rotation=30, ha="right")
            a.set(ylabel="share of query images", ylim=(0, 1),
                  title=f"γ = {gamma:g}: accuracy {self.state['accuracy']:.1f}% (mean of {self.n_samples})")
            a.legend(fontsize=8)
            xy = ((z - self.mean) @ self.directions.T).numpy()
            b.scatter(self.background[:, 0], self.background[:, 1], s=3, color="0.8", label="training latents")
            b.scatter(xy[:, 0], xy[:, 1], s=40, color="tab:purple", marker="*", label="sampled")
            b.set(xlabel="PC 1", ylabel="PC 2", title="where the samples fall")
            b.legend(fontsize=8)
            fig.suptitle(self.tasks.questions[task], fontsize=10)
            fig.tight_layout()
            plt.show()
            self.figure = fig
            plt.close(fig)
        self.state["seconds"] = time.perf_counter() - start
        self.readout.value += f" <small>(sampled, scored and drawn in {self.state['seconds']:.2f} s)</small>"

    def show(self) -> None:
        display(widgets.VBox([self.task, self.gamma, self.readout, self.output]))
