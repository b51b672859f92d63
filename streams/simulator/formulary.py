"""The medical content of the simulated region: drugs, services, exams and diagnoses.

Fixed data (it does not depend on the seed, like a real national catalogue): ~70 drugs in ~40
generic groups, the medical-service and examination items (with the packages of
`models/rules/packages.toml`), and diagnosis profiles that say which department sees a
diagnosis and which drugs and exams are consistent with it. Behaviour and scenarios draw from
these profiles, so a basket always fits its diagnosis.

Codes follow the shapes of `domain.md`: national drug codes of 27 characters
(X/Z + ATC level 4 + generic, dosage-form, specification, manufacturer and package segments),
7-digit trace-code product prefixes, 9-digit national medical-service item codes.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from models.reference import Drug

PACKAGES_TOML = Path(__file__).resolve().parents[2] / "models" / "rules" / "packages.toml"

# Price multipliers of services and exams by tier (Jiangxi prices services by hospital level);
# drugs sell at the same price everywhere (zero mark-up policy). Index: 0 clinic, 1-3 level.
LEVEL_PRICE_FACTOR = (0.8, 0.85, 1.0, 1.15)

CHRONIC, ACUTE, OTC, INPATIENT = "chronic", "acute", "otc", "inpatient"

MANUFACTURERS = (
    "江西仁和药业",
    "江中药业",
    "汇仁药业",
    "华润双鹤",
    "石药集团",
    "扬子江药业",
    "齐鲁制药",
    "恒瑞医药",
    "科伦药业",
    "正大天晴",
    "白云山",
    "华北制药",
)


@dataclass(frozen=True, slots=True)
class GroupSpec:
    """A generic group (same active ingredient and route) and its products on the market."""

    group: str
    name: str
    atc: str  # ATC level 4 (5 characters) used in the national code
    kind: str  # chronic, acute, otc, inpatient
    products: tuple[tuple[str, int, int], ...]  # (package spec, price fen, days per box)
    covered: bool = True
    tcm: bool = False  # Chinese patent medicine: national code starts with Z


# fmt: off
GROUPS: tuple[GroupSpec, ...] = (
    GroupSpec("metformin-oral", "盐酸二甲双胍片", "A10BA", CHRONIC,
              (("0.5g*60片", 1290, 30), ("0.5g*30片", 980, 15), ("0.25g*90片", 1150, 30))),
    GroupSpec("gliclazide-oral", "格列齐特缓释片", "A10BB", CHRONIC,
              (("30mg*30片", 3600, 30), ("30mg*60片", 5900, 30))),
    GroupSpec("acarbose-oral", "阿卡波糖片", "A10BF", CHRONIC,
              (("50mg*30片", 2380, 10), ("50mg*30片", 4300, 10))),
    GroupSpec("amlodipine-oral", "苯磺酸氨氯地平片", "C08CA", CHRONIC,
              (("5mg*30片", 1580, 30), ("5mg*15片", 2650, 15), ("5mg*30片", 980, 30))),
    GroupSpec("nifedipine-oral", "硝苯地平控释片", "C08CA", CHRONIC,
              (("30mg*30片", 3270, 30), ("30mg*15片", 1890, 15))),
    GroupSpec("valsartan-oral", "缬沙坦胶囊", "C09CA", CHRONIC,
              (("80mg*30粒", 2890, 30), ("80mg*15粒", 1720, 15))),
    GroupSpec("irbesartan-oral", "厄贝沙坦片", "C09CA", CHRONIC,
              (("150mg*30片", 2460, 30), ("150mg*10片", 1380, 10))),
    GroupSpec("metoprolol-oral", "琥珀酸美托洛尔缓释片", "C07AB", CHRONIC,
              (("47.5mg*30片", 3150, 30), ("47.5mg*15片", 1720, 15))),
    GroupSpec("atorvastatin-oral", "阿托伐他汀钙片", "C10AA", CHRONIC,
              (("20mg*30片", 3380, 30), ("20mg*10片", 1560, 10))),
    GroupSpec("rosuvastatin-oral", "瑞舒伐他汀钙片", "C10AA", CHRONIC,
              (("10mg*30片", 2940, 30), ("10mg*15片", 1830, 15))),
    GroupSpec("aspirin-oral", "阿司匹林肠溶片", "B01AC", CHRONIC,
              (("100mg*30片", 1550, 30), ("100mg*30片", 890, 30))),
    GroupSpec("clopidogrel-oral", "硫酸氢氯吡格雷片", "B01AC", CHRONIC,
              (("75mg*30片", 4680, 30), ("75mg*15片", 2790, 15))),
    GroupSpec("tiotropium-inhal", "噻托溴铵粉吸入剂", "R03BB", CHRONIC,
              (("18μg*30粒", 18600, 30), ("18μg*30粒", 12900, 30))),
    GroupSpec("budesonide-formoterol-inhal", "布地奈德福莫特罗吸入粉雾剂", "R03AK", CHRONIC,
              (("160μg/4.5μg*60吸", 24800, 30),)),
    GroupSpec("amoxicillin-oral", "阿莫西林胶囊", "J01CA", ACUTE,
              (("0.25g*24粒", 890, 6), ("0.5g*24粒", 1460, 6))),
    GroupSpec("cefuroxime-oral", "头孢呋辛酯片", "J01DC", ACUTE,
              (("0.25g*12片", 2380, 6), ("0.25g*6片", 1290, 3))),
    GroupSpec("azithromycin-oral", "阿奇霉素片", "J01FA", ACUTE,
              (("0.25g*6片", 1650, 3), ("0.25g*12片", 2980, 6))),
    GroupSpec("levofloxacin-oral", "盐酸左氧氟沙星片", "J01MA", ACUTE,
              (("0.5g*4片", 1720, 4), ("0.5g*6片", 2360, 6))),
    GroupSpec("mosapride-oral", "枸橼酸莫沙必利片", "A03FA", ACUTE,
              (("5mg*24片", 2860, 8), ("5mg*12片", 1590, 4))),
    GroupSpec("ambroxol-oral", "盐酸氨溴索片", "R05CB", ACUTE,
              (("30mg*20片", 1280, 7), ("30mg*30片", 1690, 10))),
    GroupSpec("levofloxacin-eye", "左氧氟沙星滴眼液", "S01AE", ACUTE,
              (("5ml:24.4mg", 1980, 7), ("5ml:15mg", 1450, 7))),
    GroupSpec("omeprazole-oral", "奥美拉唑肠溶胶囊", "A02BC", OTC,
              (("20mg*14粒", 1560, 7), ("20mg*28粒", 2760, 14))),
    GroupSpec("montmorillonite-oral", "蒙脱石散", "A07BC", OTC,
              (("3g*10袋", 1380, 3), ("3g*12袋", 1620, 4))),
    GroupSpec("loratadine-oral", "氯雷他定片", "R06AX", OTC,
              (("10mg*6片", 1850, 6), ("10mg*12片", 2980, 12))),
    GroupSpec("ibuprofen-oral", "布洛芬缓释胶囊", "M01AE", OTC,
              (("0.3g*20粒", 1590, 10), ("0.3g*10粒", 990, 5))),
    GroupSpec("paracetamol-oral", "对乙酰氨基酚片", "N02BE", OTC,
              (("0.5g*12片", 650, 3), ("0.5g*20片", 980, 5))),
    GroupSpec("diclofenac-topical", "双氯芬酸二乙胺乳胶剂", "M02AA", OTC,
              (("20g:0.2g", 2280, 10), ("50g:0.5g", 4380, 20))),
    GroupSpec("cold-compound-oral", "氨酚伪麻美芬片", "R05XA", OTC,
              (("12片", 1290, 4), ("24片", 2150, 8))),
    GroupSpec("mupirocin-topical", "莫匹罗星软膏", "D06AX", OTC,
              (("5g:0.1g", 1680, 7), ("10g:0.2g", 2790, 14))),
    GroupSpec("lianhua-qingwen", "连花清瘟胶囊", "A01AB", OTC,
              (("0.35g*24粒", 1480, 4), ("0.35g*36粒", 2050, 6)), tcm=True),
    GroupSpec("banlangen", "板蓝根颗粒", "A01AC", OTC,
              (("10g*20袋", 1250, 7), ("5g*20袋", 980, 7)), tcm=True),
    GroupSpec("vitamin-c-chewable", "维生素C咀嚼片", "A11GA", OTC,
              (("0.1g*60片", 2580, 20),), covered=False),
    GroupSpec("calcium-d3", "碳酸钙D3片", "A12AX", OTC,
              (("0.6g*30片", 3280, 30), ("0.6g*20片", 2380, 20)), covered=False),
    GroupSpec("ceftriaxone-inj", "注射用头孢曲松钠", "J01DD", INPATIENT,
              (("1.0g", 1450, 1), ("2.0g", 2620, 1))),
    GroupSpec("levofloxacin-inj", "左氧氟沙星氯化钠注射液", "J01MA", INPATIENT,
              (("0.5g:100ml", 2380, 1), ("0.3g:100ml", 1690, 1))),
    GroupSpec("sodium-chloride-inj", "氯化钠注射液", "B05XA", INPATIENT,
              (("0.9%:250ml", 380, 1), ("0.9%:100ml", 290, 1))),
    GroupSpec("omeprazole-inj", "注射用奥美拉唑钠", "A02BC", INPATIENT,
              (("40mg", 2860, 1), ("40mg", 1950, 1))),
    GroupSpec("enoxaparin-inj", "依诺肝素钠注射液", "B01AB", INPATIENT,
              (("0.4ml:4000AxaIU", 3980, 1), ("0.6ml:6000AxaIU", 5280, 1))),
    GroupSpec("furosemide-inj", "呋塞米注射液", "C03CA", INPATIENT,
              (("2ml:20mg", 120, 1),)),
    GroupSpec("xuesaitong-inj", "注射用血塞通(冻干)", "A06AA", INPATIENT,
              (("200mg", 3680, 1), ("400mg", 6890, 1)), tcm=True),
)
# fmt: on

# (code, name, item type, base price fen). Exams and services priced per tier at billing time.
SERVICES: tuple[tuple[str, str, str, int], ...] = (
    ("110200001", "普通门诊诊查费", "SERVICE", 1000),
    ("110200003", "副主任医师诊查费", "SERVICE", 2500),
    ("110200004", "主任医师诊查费", "SERVICE", 4000),
    ("120100002", "普通病房床位费", "SERVICE", 3000),
    ("121100002", "Ⅱ级护理", "SERVICE", 1800),
    ("120400001", "静脉输液", "SERVICE", 500),
    ("340200001", "中频脉冲电治疗", "SERVICE", 2000),
    ("430000001", "普通针刺", "SERVICE", 1800),
    ("110900001", "住院诊查费", "SERVICE", 2000),
    ("330100005", "全身麻醉", "SERVICE", 80000),
    ("331003003", "阑尾切除术", "SERVICE", 120000),
    ("331004011", "腹腔镜下胆囊切除术", "SERVICE", 260000),
    ("331503010", "人工股骨头置换术", "SERVICE", 450000),
    ("250101015", "血细胞分析", "EXAM", 2000),
    ("250102001", "尿常规检查", "EXAM", 1000),
    ("250301001", "葡萄糖测定", "EXAM", 500),
    ("250302001", "糖化血红蛋白测定", "EXAM", 6000),
    ("250401001", "C反应蛋白测定", "EXAM", 1500),
    ("210102001", "胸部X线摄影(DR)", "EXAM", 8000),
    ("210300001", "X线计算机体层(CT)平扫", "EXAM", 20000),
    ("220201001", "腹部B超常规检查", "EXAM", 9000),
    ("220600001", "心脏彩色多普勒超声", "EXAM", 20000),
    ("310701001", "常规心电图检查", "EXAM", 2500),
    ("310601001", "肺通气功能检查", "EXAM", 8000),
    ("C0301021210000104780", "一次性使用输液器", "CONSUMABLE", 300),
    ("C0301011150000100213", "一次性使用无菌注射器", "CONSUMABLE", 80),
    ("C1305021560000000114", "人工股骨头假体", "CONSUMABLE", 1200000),
)


@dataclass(frozen=True, slots=True)
class Package:
    """A packaged exam and the sub-items that must not be billed separately."""

    code: str
    name: str
    price_fen: int
    min_sub_items: int
    sub_items: tuple[tuple[str, str, int], ...]


def load_packages(path: Path = PACKAGES_TOML) -> tuple[Package, ...]:
    """The packages of the rule library (the same file the split-charging detector reads)."""
    data = tomllib.loads(path.read_text("utf-8"))
    return tuple(
        Package(
            p["code"],
            p["name"],
            int(p["price_fen"]),
            int(p.get("min_sub_items", 3)),
            tuple((s["code"], s["name"], int(s["price_fen"])) for s in p["sub_items"]),
        )
        for p in data["package"]
    )


@dataclass(frozen=True, slots=True)
class Diagnosis:
    """A diagnosis profile: who sees it and what is consistent with it.

    `drugs`: generic groups, of which 1..max_drugs are prescribed; `exams`: (code, probability);
    `los`: length of stay range for inpatient profiles.
    """

    code: str
    name: str
    departments: tuple[str, ...]
    kind: str  # acute (outpatient), chronic (refill), inpatient
    drugs: tuple[str, ...]
    exams: tuple[tuple[str, float], ...] = ()
    services: tuple[tuple[str, float], ...] = ()
    max_drugs: int = 2
    ages: str = "all"  # all, adult, child
    weight: float = 1.0
    los: tuple[int, int] = (0, 0)


# fmt: off
DIAGNOSES: tuple[Diagnosis, ...] = (
    Diagnosis("J06.900", "急性上呼吸道感染", ("internal", "pediatrics", "general"), ACUTE,
              drugs=("cold-compound-oral", "lianhua-qingwen", "paracetamol-oral",
              "amoxicillin-oral", "banlangen"), exams=(("250101015", 0.45), ("250401001", 0.25)),
              weight=5.0),
    Diagnosis("J20.900", "急性支气管炎", ("respiratory", "internal", "general"), ACUTE,
              drugs=("ambroxol-oral", "cefuroxime-oral", "azithromycin-oral"),
              exams=(("250101015", 0.5), ("210102001", 0.25)), weight=2.5),
    Diagnosis("J02.900", "急性咽炎", ("ent", "internal", "general"), ACUTE,
              drugs=("amoxicillin-oral", "cefuroxime-oral", "lianhua-qingwen", "banlangen"),
              exams=(("250101015", 0.3),), weight=2.0),
    Diagnosis("K29.700", "胃炎", ("internal", "general"), ACUTE,
              drugs=("omeprazole-oral", "mosapride-oral"), exams=(("220201001", 0.15),),
              weight=2.5),
    Diagnosis("K52.900", "非感染性胃肠炎", ("internal", "pediatrics", "general"), ACUTE,
              drugs=("montmorillonite-oral", "omeprazole-oral"), exams=(("250101015", 0.4),),
              weight=1.5),
    Diagnosis("M54.500", "腰痛", ("orthopedics", "internal", "general"), ACUTE,
              drugs=("ibuprofen-oral", "diclofenac-topical"), exams=(("210102001", 0.3),
              ("210300001", 0.08)), services=(("340200001", 0.35),), ages="adult", weight=2.0),
    Diagnosis("S93.400", "踝关节扭伤", ("orthopedics", "surgery", "general"), ACUTE,
              drugs=("diclofenac-topical", "ibuprofen-oral"), exams=(("210102001", 0.6),),
              weight=0.8),
    Diagnosis("L30.900", "皮炎", ("dermatology", "internal", "general"), ACUTE,
              drugs=("loratadine-oral", "mupirocin-topical"), weight=1.5),
    Diagnosis("H10.900", "结膜炎", ("ophthalmology", "internal", "general"), ACUTE,
              drugs=("levofloxacin-eye",), max_drugs=1, weight=0.8),
    Diagnosis("N39.000", "泌尿道感染", ("internal", "gynecology", "general"), ACUTE,
              drugs=("levofloxacin-oral", "cefuroxime-oral"), exams=(("250102001", 0.8),),
              max_drugs=1, ages="adult", weight=1.2),
    Diagnosis("R51.x00", "头痛", ("neurology", "internal", "general"), ACUTE,
              drugs=("ibuprofen-oral", "paracetamol-oral"), exams=(("210300001", 0.06),),
              max_drugs=1, ages="adult"),
    Diagnosis("K76.000", "脂肪肝", ("internal", "general"), ACUTE,
              drugs=(), exams=(("250305001", 0.8), ("220201001", 0.7), ("250306001", 0.4)),
              max_drugs=0, ages="adult", weight=0.8),
    Diagnosis("E87.600", "低钾血症", ("internal", "general"), ACUTE,
              drugs=(), exams=(("250304001", 0.95),), max_drugs=0, ages="adult", weight=0.3),
    Diagnosis("N18.900", "慢性肾脏病", ("internal",), ACUTE,
              drugs=(), exams=(("250307001", 0.95), ("250102001", 0.6)), max_drugs=0, ages="adult",
              weight=0.3),
    Diagnosis("E11.900", "2型糖尿病", ("endocrinology", "internal", "general"), CHRONIC,
              drugs=("metformin-oral", "gliclazide-oral", "acarbose-oral"),
              exams=(("250301001", 0.15), ("250302001", 0.05)), ages="adult"),
    Diagnosis("I10.x00", "高血压", ("cardiology", "internal", "general"), CHRONIC,
              drugs=("amlodipine-oral", "nifedipine-oral", "valsartan-oral", "irbesartan-oral",
              "metoprolol-oral"), exams=(("310701001", 0.05),), ages="adult"),
    Diagnosis("E78.500", "高脂血症", ("cardiology", "internal", "general"), CHRONIC,
              drugs=("atorvastatin-oral", "rosuvastatin-oral"), exams=(("250306001", 0.05),),
              max_drugs=1, ages="adult"),
    Diagnosis("I25.103", "冠状动脉粥样硬化性心脏病", ("cardiology", "internal", "general"), CHRONIC,
              drugs=("aspirin-oral", "clopidogrel-oral"), exams=(("310701001", 0.08),),
              max_drugs=1, ages="adult"),
    Diagnosis("J44.900", "慢性阻塞性肺疾病", ("respiratory", "internal", "general"), CHRONIC,
              drugs=("tiotropium-inhal", "budesonide-formoterol-inhal"), max_drugs=1, ages="adult"),
    Diagnosis("J18.900", "肺炎", ("respiratory", "internal", "pediatrics"), INPATIENT,
              drugs=("ceftriaxone-inj", "levofloxacin-inj", "sodium-chloride-inj",
              "ambroxol-oral"), exams=(("250401001", 0.9), ("210102001", 0.9), ("210300001", 0.3)),
              weight=3.0, los=(5, 10)),
    Diagnosis("I63.900", "脑梗死", ("neurology", "internal"), INPATIENT,
              drugs=("xuesaitong-inj", "sodium-chloride-inj", "enoxaparin-inj"),
              exams=(("210300001", 0.95), ("250306001", 0.8), ("250304001", 0.5)), ages="adult",
              weight=2.0, los=(7, 14)),
    Diagnosis("K35.800", "急性阑尾炎", ("surgery",), INPATIENT,
              drugs=("ceftriaxone-inj", "sodium-chloride-inj", "omeprazole-inj"),
              exams=(("220201001", 0.9),), los=(4, 7),
              services=(("331003003", 0.95), ("330100005", 0.95))),
    Diagnosis("I50.900", "心力衰竭", ("cardiology", "internal"), INPATIENT,
              drugs=("furosemide-inj", "enoxaparin-inj", "sodium-chloride-inj"),
              exams=(("220600001", 0.9), ("310701001", 0.9), ("250304001", 0.8),
              ("250307001", 0.6)), ages="adult", weight=1.2, los=(7, 12)),
    Diagnosis("J44.100", "慢性阻塞性肺疾病伴急性加重", ("respiratory", "internal"), INPATIENT,
              drugs=("levofloxacin-inj", "sodium-chloride-inj", "ambroxol-oral"),
              exams=(("310601001", 0.7), ("210102001", 0.8)), ages="adult", weight=1.2,
              los=(6, 10)),
    Diagnosis("S72.000", "股骨颈骨折", ("orthopedics", "surgery"), INPATIENT,
              drugs=("enoxaparin-inj", "ceftriaxone-inj", "sodium-chloride-inj"),
              exams=(("210102001", 0.9), ("210300001", 0.6)), ages="adult", weight=0.6,
              los=(8, 14), services=(("331503010", 0.8), ("330100005", 0.8),
                                     ("C1305021560000000114", 0.8))),
    Diagnosis("K80.100", "胆囊结石伴胆囊炎", ("surgery", "internal"), INPATIENT,
              drugs=("ceftriaxone-inj", "omeprazole-inj", "sodium-chloride-inj"),
              exams=(("220201001", 0.95), ("250305001", 0.7)), ages="adult", los=(5, 8),
              services=(("331004011", 0.7), ("330100005", 0.7))),
)
# fmt: on

# Combinations of chronic conditions with their share of the insured (elderly weigh more).
CHRONIC_PROFILES: tuple[tuple[tuple[str, ...], float], ...] = (
    (("I10.x00",), 0.34),
    (("E11.900",), 0.17),
    (("E11.900", "I10.x00"), 0.16),
    (("I10.x00", "E78.500"), 0.10),
    (("E78.500",), 0.07),
    (("I25.103", "E78.500"), 0.07),
    (("J44.900",), 0.06),
    (("I25.103", "I10.x00"), 0.03),
)


@dataclass(slots=True)
class Billable:
    """Anything a settlement line can bill: a drug box, a service, an exam or a consumable."""

    code: str
    name: str
    item_type: str  # DRUG, CONSUMABLE, SERVICE, EXAM
    price_fen: int
    covered: bool = True
    generic_group: str | None = None
    days_per_box: int | None = None
    product_code: str | None = None
    kind: str = ""  # the drug's group kind (chronic, acute, otc, inpatient)
    index: int = -1  # position in Formulary.drugs for drugs
    tier_prices: tuple[int, ...] = field(default=())

    def price_at(self, tier: int) -> int:
        """Unit price at a tier (0 clinic/pharmacy, 1-3 hospital level)."""
        return self.tier_prices[tier] if self.tier_prices else self.price_fen


@dataclass(slots=True)
class Formulary:
    """All billables by code, drugs in catalogue order, groups, packages and diagnoses."""

    drugs: list[Billable]
    items: dict[str, Billable]
    groups: dict[str, list[Billable]]
    group_kind: dict[str, str]
    packages: tuple[Package, ...]
    diagnoses: dict[str, Diagnosis]

    @classmethod
    def build(cls) -> Formulary:
        drugs: list[Billable] = []
        groups: dict[str, list[Billable]] = {}
        for g_no, spec in enumerate(GROUPS):
            groups[spec.group] = []
            for p_no, (pack, price, days) in enumerate(spec.products):
                maker_no = (g_no * 5 + p_no * 7) % len(MANUFACTURERS)
                code = drug_code(spec, g_no, p_no, maker_no)
                drug = Billable(
                    code=code,
                    name=f"{spec.name} {pack}({MANUFACTURERS[maker_no]})",
                    item_type="DRUG",
                    price_fen=price,
                    covered=spec.covered,
                    generic_group=spec.group,
                    days_per_box=days,
                    product_code=product_code(len(drugs)),
                    kind=spec.kind,
                    index=len(drugs),
                )
                drugs.append(drug)
                groups[spec.group].append(drug)
        items: dict[str, Billable] = {d.code: d for d in drugs}
        for code, name, item_type, price in SERVICES:
            items[code] = _tiered(code, name, item_type, price)
        packages = load_packages()
        for pkg in packages:
            items[pkg.code] = _tiered(pkg.code, pkg.name, "EXAM", pkg.price_fen)
            for code, name, price in pkg.sub_items:
                items[code] = _tiered(code, name, "EXAM", price)
        return cls(
            drugs=drugs,
            items=items,
            groups=groups,
            group_kind={g.group: g.kind for g in GROUPS},
            packages=packages,
            diagnoses={d.code: d for d in DIAGNOSES},
        )

    def reference_drugs(self) -> list[Drug]:
        """The catalogue as the detectors' reference data."""
        return [
            Drug(
                drug_code=d.code,
                name=d.name,
                generic_group=d.generic_group or "",
                product_code=d.product_code or "",
                unit_price_fen=d.price_fen,
                days_per_box=d.days_per_box or 1,
                covered=d.covered,
            )
            for d in self.drugs
        ]


def _tiered(code: str, name: str, item_type: str, price: int) -> Billable:
    tiers = tuple(round(price * f / 10.0) * 10 for f in LEVEL_PRICE_FACTOR)
    return Billable(code=code, name=name, item_type=item_type, price_fen=price, tier_prices=tiers)


def drug_code(spec: GroupSpec, g_no: int, p_no: int, maker_no: int) -> str:
    """A 27-character national code: X|Z, ATC level 4, generic, form, spec, maker, package."""
    prefix = "Z" if spec.tcm else "X"
    form = 1 if spec.kind != INPATIENT else 45
    code = (
        f"{prefix}{spec.atc}D{(g_no * 37 + 11) % 1000:03d}A{form + p_no:03d}"
        f"{(p_no + 1) * 101:04d}{(maker_no * 347 + 100) % 100000:05d}{p_no + 1:04d}"
    )
    assert len(code) == 27, code
    return code


def product_code(index: int) -> str:
    """The 7-digit trace-code prefix of a product (8 + company and product digits)."""
    return f"8{(index * 7919 + 104729) % 1_000_000:06d}"
