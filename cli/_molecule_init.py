"""``molecules train --init``: the starting model, its task on the new data, its widths."""

from __future__ import annotations


def initial_model(init: str) -> tuple:
    """(task, denoiser) of ``--init`` ('shipped' = the shipped QM9 model)."""
    from discdiff.tasks import runs

    return runs.from_pretrained("qm9" if init == "shipped" else init, expect="molecules")


def init_task(start, prep, ce_weight, objective=None):
    """The --init model's task (processes, priors, node counts), on the new data's vocabulary;
    its objective unless ``objective`` names another."""
    import dataclasses

    from discdiff.tasks.molecules import MoleculeTask

    if start.vocab.atoms != prep.vocab.atoms:
        raise ValueError(
            f"--init: the model's atoms {start.vocab.atoms} differ from the data's "
            f"{prep.vocab.atoms}"
        )
    if start.vocab == prep.vocab:
        return MoleculeTask(
            dataclasses.replace(
                start.config,
                dataset=prep.dataset,
                ce_weight=ce_weight,
                objective=objective or start.config.objective,
            )
        )
    if not start.vocab.kekulize:
        raise ValueError("--init: the model has an aromatic bond class; train it with --aromatic")
    c = start.config  # a kekulized model into aromatic bonds: the priors are the new data's
    return MoleculeTask.from_graphs(
        prep.graphs,
        prep.vocab,
        max_nodes=c.max_nodes,
        process=c.process,
        schedule=c.schedule,
        edge_weight=c.edge_weight,
        dataset=prep.dataset,
        ce_weight=ce_weight,
        objective=objective or c.objective,
    )


def init_denoiser(model, start, prep):
    """The --init denoiser, its bond classes grown when the data adds an aromatic class."""
    from discdiff.tasks.molecules import grow_to_vocab

    return grow_to_vocab(model, start.vocab, prep.vocab)


def denoiser_sizes(model) -> dict:
    """The widths of a graph denoiser (what ``new_model`` takes), from its config."""
    skip = {"atom_num_states", "atom_num_classes", "bond_num_states", "bond_num_classes",
            "max_nodes", "no_bond_id", "num_properties", "property_bins"}  # fmt: skip
    return {k: v for k, v in model.config.to_dict().items() if k not in skip}
