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
"""

from __future__ import annotations

from fractions import Fraction

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
        citation="[HNW] II.1 (Kutta 1901), the classical method",
    )
)

_add(
    ButcherTableau(
        "rk38",
        A=[[], ["1/3"], ["-1/3", 1], [1, -1, 1]],
        b=["1/8", "3/8", "3/8", "1/8"],
        c=[0, "1/3", "2/3", 1],
        order=4,
        citation="[HNW] II.1 (Kutta 1901), the 3/8 rule",
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

# ---------------------------------------------------------------- DOP853
_DOP853_C = (
    "0.0",
    "0.526001519587677318785587544488e-01",
    "0.789002279381515978178381316732e-01",
    "0.118350341907227396726757197510",
    "0.281649658092772603273242802490",
    "0.333333333333333333333333333333",
    "0.25",
    "0.307692307692307692307692307692",
    "0.651282051282051282051282051282",
    "0.6",
    "0.857142857142857142857142857142",
    "1.0",
    "1.0",
)
# Nonzero stage coefficients, row -> {column: value}; row 12 is the FSAL stage f(t + h, x_new).
_DOP853_A = {
    1: {
        0: "5.26001519587677318785587544488e-2",
    },
    2: {
        0: "1.97250569845378994544595329183e-2",
        1: "5.91751709536136983633785987549e-2",
    },
    3: {
        0: "2.95875854768068491816892993775e-2",
        2: "8.87627564304205475450678981324e-2",
    },
    4: {
        0: "2.41365134159266685502369798665e-1",
        2: "-8.84549479328286085344864962717e-1",
        3: "9.24834003261792003115737966543e-1",
    },
    5: {
        0: "3.7037037037037037037037037037e-2",
        3: "1.70828608729473871279604482173e-1",
        4: "1.25467687566822425016691814123e-1",
    },
    6: {
        0: "3.7109375e-2",
        3: "1.70252211019544039314978060272e-1",
        4: "6.02165389804559606850219397283e-2",
        5: "-1.7578125e-2",
    },
    7: {
        0: "3.70920001185047927108779319836e-2",
        3: "1.70383925712239993810214054705e-1",
        4: "1.07262030446373284651809199168e-1",
        5: "-1.53194377486244017527936158236e-2",
        6: "8.27378916381402288758473766002e-3",
    },
    8: {
        0: "6.24110958716075717114429577812e-1",
        3: "-3.36089262944694129406857109825",
        4: "-8.68219346841726006818189891453e-1",
        5: "2.75920996994467083049415600797e1",
        6: "2.01540675504778934086186788979e1",
        7: "-4.34898841810699588477366255144e1",
    },
    9: {
        0: "4.77662536438264365890433908527e-1",
        3: "-2.48811461997166764192642586468",
        4: "-5.90290826836842996371446475743e-1",
        5: "2.12300514481811942347288949897e1",
        6: "1.52792336328824235832596922938e1",
        7: "-3.32882109689848629194453265587e1",
        8: "-2.03312017085086261358222928593e-2",
    },
    10: {
        0: "-9.3714243008598732571704021658e-1",
        3: "5.18637242884406370830023853209",
        4: "1.09143734899672957818500254654",
        5: "-8.14978701074692612513997267357",
        6: "-1.85200656599969598641566180701e1",
        7: "2.27394870993505042818970056734e1",
        8: "2.49360555267965238987089396762",
        9: "-3.0467644718982195003823669022",
    },
    11: {
        0: "2.27331014751653820792359768449",
        3: "-1.05344954667372501984066689879e1",
        4: "-2.00087205822486249909675718444",
        5: "-1.79589318631187989172765950534e1",
        6: "2.79488845294199600508499808837e1",
        7: "-2.85899827713502369474065508674",
        8: "-8.87285693353062954433549289258",
        9: "1.23605671757943030647266201528e1",
        10: "6.43392746015763530355970484046e-1",
    },
    12: {
        0: "5.42937341165687622380535766363e-2",
        5: "4.45031289275240888144113950566",
        6: "1.89151789931450038304281599044",
        7: "-5.8012039600105847814672114227",
        8: "3.1116436695781989440891606237e-1",
        9: "-1.52160949662516078556178806805e-1",
        10: "2.01365400804030348374776537501e-1",
        11: "4.47106157277725905176885569043e-2",
    },
}
# Error weights e5 = b − b̂5 of the order-5 estimate (Hairer's ER1, ER6..ER12).
_DOP853_E5 = {0: "0.1312004499419488073250102996e-1", 5: "-0.1225156446376204440720569753e+1", 6: "-0.4957589496572501915214079952", 7: "0.1664377182454986536961530415e+1", 8: "-0.3503288487499736816886487290", 9: "0.3341791187130174790297318841", 10: "0.8192320648511571246570742613e-1", 11: "-0.2235530786388629525884427845e-1"}
# Weights of the order-3 method b̂3 (Hairer's BHH1..BHH3) on stages 1, 9, 12.
_DOP853_BHH = {0: "0.244094488188976377952755905512", 8: "0.733846688281611857341361741547", 11: "0.220588235294117647058823529412e-1"}


def _dop853() -> ButcherTableau:
    s = 13
    A = [[Fraction(0)] * s for _ in range(s)]
    for i, row in _DOP853_A.items():
        for j, v in row.items():
            A[i][j] = Fraction(v)
    b = A[12][:]  # the FSAL row holds the order-8 weights (b_13 = 0)
    b_hat = [b[j] - Fraction(_DOP853_E5.get(j, 0)) for j in range(s)]
    b_hat3 = [Fraction(_DOP853_BHH.get(j, 0)) for j in range(s)]
    return ButcherTableau(
        "dop853",
        A=A,
        b=b,
        b_hat=b_hat,
        c=_DOP853_C,
        order=8,
        embedded_order=5,
        fsal=True,
        # Published to 30 digits (the method involves √6).
        tol="1e-24",
        b_hat_aux=b_hat3,
        aux_order=3,
        citation=(
            "[HNW] II.10, Hairer's DOP853 (coefficients as in scipy's DOP853). 13 stages, "
            "the 13th being the FSAL evaluation f(t + h, x_new). `b_hat` = b − e5 is the "
            "order-5 embedded method (error = x − x̂ is DOP853's e5 estimate); "
            "`b_hat_aux` holds the order-3 weights b̂3 of the second estimate e3 = x − x̂3. "
            "DOP853 combines them as err = e5² / sqrt(e5² + 0.01 e3²) per component; "
            "stiffkit's controller uses e5 alone unless told otherwise."
        ),
    )


_add(_dop853(), "rk853")
