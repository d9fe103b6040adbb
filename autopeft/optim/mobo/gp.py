"""GP surrogates of ``mobo`` and their lengthscale priors.

``X (n, d)``: double encodings in ``[0, 1]^d``; ``Y (n, k)``: double outcomes in maximisation
form, one independent output per column, each standardised by the model.

Priors (``lengthscale_prior``): ``"lognormal:<m>"`` — an RBF kernel with a LogNormal lengthscale
prior of median ``m`` and scale ``sqrt 3``; ``"dim_scaled"`` — BoTorch's default
(``SingleTaskGP``'s own kernel and prior); ``"gamma"`` — a Matern kernel with BoTorch's former
Gamma(3, 6) lengthscale prior; ``"auto"`` — resolved by :func:`resolve_prior`. Measurements
behind the choices: ``docs/mobo.md``.
"""

from __future__ import annotations

import math
import warnings

from autopeft.errors import InvalidConfig

PRIORS = ("auto", "dim_scaled", "gamma")


def check_priors(option) -> None:
    """Raise :class:`InvalidConfig` unless ``option`` is a prior name or a list of them."""
    for prior in option if isinstance(option, (list, tuple)) else [option]:
        if prior in PRIORS:
            continue
        try:
            ok = str(prior).startswith("lognormal:") and float(str(prior)[10:]) > 0
        except ValueError:
            ok = False
        if not ok:
            raise InvalidConfig(
                "must be 'auto', 'dim_scaled', 'gamma' or 'lognormal:<median lengthscale>' "
                f"(or a list of them), got {prior!r}",
                "lengthscale_prior",
            )


def resolve_prior(option, number: int, continuous: bool) -> str:
    """The prior for suggestion ``number``: a list is taken in turn (element ``number % len``);
    ``"auto"`` is ``"lognormal:0.3"`` on purely ``continuous`` spaces, else ``"dim_scaled"``."""
    prior = option[number % len(option)] if isinstance(option, (list, tuple)) else option
    if prior == "auto":
        prior = "lognormal:0.3" if continuous else "dim_scaled"
    return prior


def fit_saas(X, Y):
    """One fully Bayesian SAAS GP per output column (NUTS), as a ``ModelListGP``."""
    from botorch.fit import fit_fully_bayesian_model_nuts
    from botorch.models import ModelListGP
    from botorch.models.fully_bayesian import SaasFullyBayesianSingleTaskGP
    from botorch.models.transforms.outcome import Standardize

    models = []
    for j in range(Y.shape[-1]):
        m = SaasFullyBayesianSingleTaskGP(X, Y[:, j : j + 1], outcome_transform=Standardize(m=1))
        fit_fully_bayesian_model_nuts(
            m, warmup_steps=128, num_samples=64, thinning=16, disable_progbar=True
        )
        models.append(m)
    return ModelListGP(*models)


def _kernel_and_likelihood(X, Y, prior: str) -> dict:
    """``SingleTaskGP`` keyword arguments for ``prior`` (none for ``"dim_scaled"``)."""
    import torch

    batch = torch.Size([Y.shape[-1]]) if Y.shape[-1] > 1 else torch.Size()
    if prior == "gamma":
        from botorch.models.utils.gpytorch_modules import (
            get_gaussian_likelihood_with_gamma_prior,
            get_matern_kernel_with_gamma_prior,
        )

        return {
            "covar_module": get_matern_kernel_with_gamma_prior(X.shape[-1], batch_shape=batch),
            "likelihood": get_gaussian_likelihood_with_gamma_prior(batch_shape=batch),
        }
    if prior.startswith("lognormal"):
        from botorch.models.utils.gpytorch_modules import (
            get_gaussian_likelihood_with_lognormal_prior,
        )
        from gpytorch.constraints import GreaterThan
        from gpytorch.kernels import RBFKernel
        from gpytorch.priors import LogNormalPrior

        median = float(prior.partition(":")[2])
        lp = LogNormalPrior(loc=math.log(median), scale=math.sqrt(3))
        kernel = RBFKernel(
            ard_num_dims=X.shape[-1],
            batch_shape=batch,
            lengthscale_prior=lp,
            lengthscale_constraint=GreaterThan(2.5e-2, transform=None, initial_value=median),
        )
        return {
            "covar_module": kernel,
            "likelihood": get_gaussian_likelihood_with_lognormal_prior(batch_shape=batch),
        }
    return {}


def fit_gp(X, Y, prior: str, maxiter: int, start: dict | None = None):
    """A ``SingleTaskGP`` (ARD, ``Standardize``) with ``prior`` (a resolved name), fitted by
    maximising the marginal likelihood with at most ``maxiter`` L-BFGS steps.

    ``start``: :func:`hyperparameters` of an earlier fit with the same prior and shapes; the fit
    starts from them with a third of the steps (at least 20). Returns ``(model, error)``:
    ``error`` is ``"<type>: <message>"`` when fitting failed (the model then keeps its initial
    hyper-parameters), else ``None``."""
    from botorch.fit import fit_gpytorch_mll
    from botorch.models import SingleTaskGP
    from botorch.models.transforms.outcome import Standardize
    from gpytorch.mlls import ExactMarginalLogLikelihood

    kwargs = _kernel_and_likelihood(X, Y, prior)
    model = SingleTaskGP(X, Y, outcome_transform=Standardize(m=Y.shape[-1]), **kwargs)
    if start is not None:
        model.load_state_dict(start, strict=False)
        maxiter = max(20, maxiter // 3)
    mll = ExactMarginalLogLikelihood(model.likelihood, model)
    error = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            fit_gpytorch_mll(mll, optimizer_kwargs={"options": {"maxiter": maxiter}})
        except Exception as err:  # the model keeps its initial hyper-parameters; the caller reports
            error = f"{type(err).__name__}: {err}"
    return model, error


def hyperparameters(model) -> dict:
    """A copy of ``model``'s hyper-parameters (its state without training data or outcome
    transform): the ``start`` of a later :func:`fit_gp`."""
    return {
        k: v.detach().clone()
        for k, v in model.state_dict().items()
        if not k.startswith("outcome_transform") and "train" not in k
    }
