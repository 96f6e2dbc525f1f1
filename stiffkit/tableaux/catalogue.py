"""The catalogue of explicit Runge–Kutta methods shipped with stiffkit.

Each entry is a tableau plus its aliases. Coefficients are written as exact rationals
(strings like ``"9/40"``) wherever the method has rational coefficients, so validation
and order conditions are checked exactly.

References
----------
* [HNW] E. Hairer, S. P. Nørsett, G. Wanner, *Solving Ordinary Differential Equations I*,
  2nd ed., Springer 1993 (Euler, Heun, midpoint, RK4, 3/8 rule, Fehlberg, DOPRI5, DOP853).
* [R62] A. Ralston, "Runge-Kutta methods with minimum error bounds", Math. Comp. 16 (1962).
* [BS89] P. Bogacki, L. F. Shampine, "A 3(2) pair of Runge-Kutta formulas",
  Appl. Math. Lett. 2 (1989).
* [F69] E. Fehlberg, "Low-order classical Runge-Kutta formulas with stepsize control",
  NASA TR R-315 (1969).
* [CK90] J. R. Cash, A. H. Karp, "A variable order Runge-Kutta method for initial value
  problems with rapidly varying right-hand sides", ACM TOMS 16 (1990).
* [DP80] J. R. Dormand, P. J. Prince, "A family of embedded Runge-Kutta formulae",
  J. Comput. Appl. Math. 6 (1980).
* [S86] L. F. Shampine, "Some practical Runge-Kutta formulas", Math. Comp. 46 (1986) —
  the alternative DOPRI5 error weights used by torchdiffeq and diffrax.
* [T11] Ch. Tsitouras, "Runge–Kutta pairs of order 5(4) satisfying only the first column
  simplifying assumption", Comput. Math. Appl. 62 (2011).
* [SO88] C.-W. Shu, S. Osher, "Efficient implementation of essentially non-oscillatory
  shock-capturing schemes", J. Comput. Phys. 77 (1988) (SSPRK3).
* [PD81] P. J. Prince, J. R. Dormand, "High order embedded Runge-Kutta formulae",
  J. Comput. Appl. Math. 7 (1981) (RK8(7)13M, torchdiffeq's "dopri8").

The two eighth-order pairs, DOP853 and RK8(7)13M, are built in
:mod:`stiffkit.tableaux.catalogue_rk8` and registered here.
"""

from __future__ import annotations

from fractions import Fraction

from stiffkit.tableaux.catalogue_rk8 import dop853, prince_dormand_87
from stiffkit.tableaux.tableau import ButcherTableau

CATALOGUE: list[tuple[ButcherTableau, tuple[str, ...]]] = []


def _add(tableau: ButcherTableau, *aliases: str) -> None:
    CATALOGUE.append((tableau, aliases))


# ---------------------------------------------------------------- low order
_add(ButcherTableau("euler", A=[[]], b=[1], c=[0], order=1, citation="[HNW] I.1"))

_add(
    ButcherTableau(
        "heun_euler",
        A=[[], [1]],
        b=["1/2", "1/2"],
        b_hat=[1, 0],
        c=[0, 1],
        order=2,
        embedded_order=1,
        citation="[HNW] II.1; Heun 2 with Euler embedded: ERK-Guid's pair",
    ),
    "heun",
    "heun2",
    "adaptive_heun",
)

_add(ButcherTableau("midpoint", A=[[], ["1/2"]], b=[0, 1], c=[0, "1/2"], order=2,
                    citation="[HNW] II.1 (Runge 1895)"))

_add(ButcherTableau("ralston", A=[[], ["2/3"]], b=["1/4", "3/4"], c=[0, "2/3"], order=2,
                    citation="[R62]"))

_add(
    ButcherTableau(
        "fehlberg12",
        A=[[], ["1/2"], ["1/256", "255/256"]],
        b=["1/512", "255/256", "1/512"],
        b_hat=["1/256", "255/256", 0],
        c=[0, "1/2", 1],
        order=2,
        embedded_order=1,
        citation="[F69] RKF1(2), propagating the order-2 solution (torchdiffeq's 'fehlberg2')",
    ),
    "fehlberg2",
)

# ---------------------------------------------------------------- order 3 / 4
_add(
    ButcherTableau(
        "ssprk3",
        A=[[], [1], ["1/4", "1/4"]],
        b=["1/6", "1/6", "2/3"],
        c=[0, 1, "1/2"],
        order=3,
        citation="[SO88]",
    )
)

_add(
    ButcherTableau(
        "bogacki_shampine",
        A=[[], ["1/2"], [0, "3/4"], ["2/9", "1/3", "4/9"]],
        b=["2/9", "1/3", "4/9", 0],
        b_hat=["7/24", "1/4", "1/3", "1/8"],
        c=[0, "1/2", "3/4", 1],
        order=3,
        embedded_order=2,
        fsal=True,
        citation="[BS89]; scipy RK23, torchdiffeq bosh3",
    ),
    "bosh3",
    "rk23",
)

_add(
    ButcherTableau(
        "rk4",
        A=[[], ["1/2"], [0, "1/2"], [0, 0, 1]],
        b=["1/6", "1/3", "1/3", "1/6"],
        c=[0, "1/2", "1/2", 1],
        order=4,
        citation="[HNW] II.1 (Kutta 1901), the classical method (torchdiffeq's 'rk4' is "
                 "not this one but the 3/8 rule, stiffkit's 'rk38')",
    )
)

_add(
    ButcherTableau(
        "rk38",
        A=[[], ["1/3"], ["-1/3", 1], [1, -1, 1]],
        b=["1/8", "3/8", "3/8", "1/8"],
        c=[0, "1/3", "2/3", 1],
        order=4,
        citation="[HNW] II.1 (Kutta 1901), the 3/8 rule (torchdiffeq's 'rk4')",
    )
)

# ---------------------------------------------------------------- order 5
_add(
    ButcherTableau(
        "fehlberg45",
        A=[
            [],
            ["1/4"],
            ["3/32", "9/32"],
            ["1932/2197", "-7200/2197", "7296/2197"],
            ["439/216", -8, "3680/513", "-845/4104"],
            ["-8/27", 2, "-3544/2565", "1859/4104", "-11/40"],
        ],
        b=["25/216", 0, "1408/2565", "2197/4104", "-1/5", 0],
        b_hat=["16/135", 0, "6656/12825", "28561/56430", "-9/50", "2/55"],
        c=[0, "1/4", "3/8", "12/13", 1, "1/2"],
        order=4,
        embedded_order=5,
        citation="[F69] RKF4(5): Fehlberg's design propagates the order-4 solution; "
        "the order-5 weights are the embedded ones",
    ),
    "rkf45",
)

_add(
    ButcherTableau(
        "cash_karp",
        A=[
            [],
            ["1/5"],
            ["3/40", "9/40"],
            ["3/10", "-9/10", "6/5"],
            ["-11/54", "5/2", "-70/27", "35/27"],
            ["1631/55296", "175/512", "575/13824", "44275/110592", "253/4096"],
        ],
        b=["37/378", 0, "250/621", "125/594", 0, "512/1771"],
        b_hat=["2825/27648", 0, "18575/48384", "13525/55296", "277/14336", "1/4"],
        c=[0, "1/5", "3/10", "3/5", 1, "7/8"],
        order=5,
        embedded_order=4,
        citation="[CK90]",
    ),
)

_DOPRI5_A = [
    [],
    ["1/5"],
    ["3/40", "9/40"],
    ["44/45", "-56/15", "32/9"],
    ["19372/6561", "-25360/2187", "64448/6561", "-212/729"],
    ["9017/3168", "-355/33", "46732/5247", "49/176", "-5103/18656"],
    ["35/384", 0, "500/1113", "125/192", "-2187/6784", "11/84"],
]
_DOPRI5_B = ["35/384", 0, "500/1113", "125/192", "-2187/6784", "11/84", 0]
_DOPRI5_C = [0, "1/5", "3/10", "4/5", "8/9", 1, 1]

_add(
    ButcherTableau(
        "dopri5",
        A=_DOPRI5_A,
        b=_DOPRI5_B,
        b_hat=["5179/57600", 0, "7571/16695", "393/640", "-92097/339200", "187/2100", "1/40"],
        c=_DOPRI5_C,
        order=5,
        embedded_order=4,
        fsal=True,
        citation="[DP80], [HNW] II.5 Table 5.2: Hairer's embedded weights, as in scipy RK45",
    ),
    "rk45",
    "dormand_prince",
)

_add(
    ButcherTableau(
        "dopri5_shampine",
        A=_DOPRI5_A,
        b=_DOPRI5_B,
        b_hat=["1951/21600", 0, "22642/50085", "451/720", "-12231/42400", "649/6300", "1/60"],
        c=_DOPRI5_C,
        order=5,
        embedded_order=4,
        fsal=True,
        citation="[DP80] with the embedded weights of [S86], as in torchdiffeq and diffrax",
    ),
)

# Published to ~17 significant digits: the order-5 conditions hold to ~1.3e-14, not exactly.
_TSIT5_B = [
    "0.09646076681806523", "0.01", "0.4798896504144996", "1.379008574103742",
    "-3.290069515436081", "2.324710524099774", 0,
]
# b̃ = b̂ − b in Tsitouras' notation.
_TSIT5_BTILDE = [
    "-0.00178001105222577714", "-0.0008164344596567469", "0.007880878010261995",
    "-0.1447110071732629", "0.5823571654525552", "-0.45808210592918697", "1/66",
]
_add(
    ButcherTableau(
        "tsit5",
        A=[
            [],
            ["0.161"],
            ["-0.008480655492356989", "0.335480655492357"],
            ["2.897153057105493", "-6.359448489975075", "4.3622954328695815"],
            ["5.325864828439257", "-11.748883564062828", "7.4955393428898365",
             "-0.09249506636175525"],
            ["5.86145544294642", "-12.92096931784711", "8.159367898576159",
             "-0.071584973281401", "-0.028269050394068383"],
            _TSIT5_B[:6],
        ],
        b=_TSIT5_B,
        b_hat=[Fraction(b) + Fraction(e) for b, e in zip(_TSIT5_B, _TSIT5_BTILDE)],
        c=[0, "0.161", "0.327", "0.9", "0.9800255409045097", 1, 1],
        order=5,
        embedded_order=4,
        fsal=True,
        tol="1e-13",
        citation="[T11] Table 1 (decimal coefficients)",
    ),
)

# ---------------------------------------------------------------- order 8
_add(dop853(), "rk853")
_add(prince_dormand_87(), "prince_dormand_87")
