"""Static reference data for the demo generator: names, places, local offices, trusts and programmes.

All of it is public-domain-style reference material (NHS England local office names, well-known trusts
and hospitals, Ofcom drama-range telephone numbers); none of it describes a real person.
"""

from __future__ import annotations

from dataclasses import dataclass

FORENAMES: tuple[str, ...] = (
    "Oliver", "George", "Harry", "Jack", "Jacob", "Noah", "Charlie", "Thomas", "Oscar", "William",
    "James", "Henry", "Leo", "Alfie", "Joshua", "Freddie", "Archie", "Ethan", "Isaac", "Alexander",
    "Olivia", "Amelia", "Isla", "Ava", "Emily", "Sophia", "Grace", "Mia", "Poppy", "Ella",
    "Lily", "Evie", "Isabella", "Sophie", "Ivy", "Freya", "Harper", "Charlotte", "Florence", "Rosie",
    "Mohammed", "Muhammad", "Ahmed", "Omar", "Ali", "Hassan", "Yusuf", "Ibrahim", "Zainab", "Fatima",
    "Aisha", "Maryam", "Amina", "Hana", "Priya", "Anjali", "Rahul", "Arjun", "Rohan", "Aditya",
    "Sanjay", "Deepa", "Kavya", "Neha", "Ravi", "Vikram", "Chidi", "Ngozi", "Adaeze", "Oluwaseun",
    "Tunde", "Folake", "Kwame", "Ama", "Kofi", "Abena", "Wei", "Mei", "Jun", "Li",
    "Siobhan", "Niamh", "Ciaran", "Aoife", "Rhys", "Cerys", "Gethin", "Eilidh", "Callum", "Morag",
    "Ada", "Eleanor", "Hannah", "Rebecca", "Sarah", "Laura", "Katherine", "Rachel", "Daniel", "Matthew",
)

SURNAMES: tuple[str, ...] = (
    "Smith", "Jones", "Williams", "Taylor", "Brown", "Davies", "Evans", "Wilson", "Thomas", "Johnson",
    "Roberts", "Robinson", "Thompson", "Wright", "Walker", "White", "Edwards", "Hughes", "Green", "Hall",
    "Lewis", "Harris", "Clarke", "Patel", "Jackson", "Wood", "Turner", "Martin", "Cooper", "Hill",
    "Ward", "Morris", "Moore", "Clark", "Lee", "King", "Baker", "Harrison", "Morgan", "Allen",
    "Khan", "Ahmed", "Ali", "Hussain", "Begum", "Rahman", "Islam", "Iqbal", "Malik", "Chaudhry",
    "Shah", "Sharma", "Singh", "Kaur", "Gupta", "Kumar", "Mehta", "Desai", "Joshi", "Nair",
    "Okafor", "Adeyemi", "Okonkwo", "Mensah", "Owusu", "Boateng", "Adebayo", "Eze", "Nwosu", "Balogun",
    "Chen", "Wang", "Zhang", "Liu", "Nguyen", "Tan", "Wong", "Kim", "Park", "Ng",
    "O'Brien", "O'Connor", "Murphy", "Kelly", "Byrne", "MacDonald", "Campbell", "Stewart", "Fraser", "Reid",
    "Kowalski", "Nowak", "Rossi", "Fernandes", "Papadopoulos", "Silva", "Costa", "Ibrahim", "Yilmaz", "Haddad",
)

# title -> weight; doctors in training are mostly "Dr"
TITLES: tuple[tuple[str, int], ...] = (
    ("Dr", 880), ("Mr", 40), ("Ms", 30), ("Mrs", 20), ("Miss", 20), ("Prof", 10),
)

STREET_NAMES: tuple[str, ...] = (
    "High Street", "Station Road", "Church Lane", "Mill Road", "Victoria Road", "Green Lane", "Manor Road",
    "Park Avenue", "Queens Road", "The Crescent", "New Road", "Grange Road", "Kings Road", "Chapel Street",
    "Hills Road", "London Road", "York Street", "Orchard Close", "Meadow View", "Albert Road",
)

# Ofcom's ranges reserved for drama: numbers that ring nobody.
LANDLINE_PREFIXES: tuple[str, ...] = (
    "020 7946 0", "0113 496 0", "0114 496 0", "0115 496 0", "0116 496 0", "0117 496 0", "0118 496 0",
    "0121 496 0", "0131 496 0", "0141 496 0", "0151 496 0", "0161 496 0", "0191 498 0",
)
MOBILE_PREFIX = "07700 900"

POSTCODE_LETTERS = "ABDEFGHJLNPQRSTUWXYZ"  # the inward-code letters Royal Mail uses


@dataclass(frozen=True)
class Site:
    name: str
    known_as: str | None
    location: str


@dataclass(frozen=True)
class Trust:
    name: str
    sites: tuple[Site, ...]


@dataclass(frozen=True)
class Town:
    name: str
    county: str | None
    postcode_area: str
    districts: tuple[int, ...]


@dataclass(frozen=True)
class LocalOffice:
    name: str
    code: str
    designated_body: str
    lead_employer: str | None
    towns: tuple[Town, ...]
    trusts: tuple[Trust, ...]


def _t(name: str, *sites: tuple[str, str | None, str]) -> Trust:
    return Trust(name, tuple(Site(*s) for s in sites))


LOCAL_OFFICES: tuple[LocalOffice, ...] = (
    LocalOffice(
        "Health Education England East of England", "EOE", "1-AIIDR8", None,
        (Town("Cambridge", "Cambridgeshire", "CB", (1, 2, 3, 4, 5)), Town("Norwich", "Norfolk", "NR", (1, 2, 3, 4)),
         Town("Ipswich", "Suffolk", "IP", (1, 2, 3, 4)), Town("Luton", "Bedfordshire", "LU", (1, 2, 3, 4))),
        (_t("Cambridge University Hospitals NHS Foundation Trust",
            ("Addenbrooke's Hospital", None, "Hills Road, Cambridge"),
            ("The Rosie Hospital", "Rosie Maternity", "Robinson Way, Cambridge")),
         _t("Royal Papworth Hospital NHS Foundation Trust",
            ("Royal Papworth Hospital", None, "Papworth Road, Cambridge")),
         _t("Norfolk and Norwich University Hospitals NHS Foundation Trust",
            ("Norfolk and Norwich University Hospital", "NNUH", "Colney Lane, Norwich")),
         _t("East Suffolk and North Essex NHS Foundation Trust",
            ("Ipswich Hospital", None, "Heath Road, Ipswich"),
            ("Colchester General Hospital", None, "Turner Road, Colchester")),
         _t("Bedfordshire Hospitals NHS Foundation Trust",
            ("Luton and Dunstable University Hospital", "L&D", "Lewsey Road, Luton"),
            ("Bedford Hospital South Wing", "Bedford Hospital", "Kempston Road, Bedford"))),
    ),
    LocalOffice(
        "Health Education England North West", "NWE", "1-AIIDVS", "St Helens and Knowsley Teaching Hospitals NHS Trust",
        (Town("Manchester", None, "M", (1, 13, 14, 20)), Town("Liverpool", "Merseyside", "L", (3, 7, 9, 14)),
         Town("Preston", "Lancashire", "PR", (1, 2, 5))),
        (_t("Manchester University NHS Foundation Trust",
            ("Manchester Royal Infirmary", "MRI", "Oxford Road, Manchester"),
            ("Wythenshawe Hospital", None, "Southmoor Road, Manchester")),
         _t("Liverpool University Hospitals NHS Foundation Trust",
            ("Royal Liverpool University Hospital", "Royal Liverpool", "Prescot Street, Liverpool"),
            ("Aintree University Hospital", None, "Longmoor Lane, Liverpool")),
         _t("Lancashire Teaching Hospitals NHS Foundation Trust",
            ("Royal Preston Hospital", None, "Sharoe Green Lane, Preston"))),
    ),
    LocalOffice(
        "Health Education England North Central and East London", "LDN", "1-AIIDWA", None,
        (Town("London", None, "E", (1, 2, 3, 9, 14)), Town("London", None, "N", (1, 7, 19)),
         Town("London", None, "NW", (1, 3))),
        (_t("University College London Hospitals NHS Foundation Trust",
            ("University College Hospital", "UCH", "Euston Road, London")),
         _t("Barts Health NHS Trust",
            ("The Royal London Hospital", "Royal London", "Whitechapel Road, London"),
            ("Whipps Cross University Hospital", "Whipps Cross", "Whipps Cross Road, London")),
         _t("Royal Free London NHS Foundation Trust",
            ("Royal Free Hospital", None, "Pond Street, London"))),
    ),
    LocalOffice(
        "Health Education England Kent, Surrey and Sussex", "KSS", "1-AIIDSI", None,
        (Town("Brighton", "East Sussex", "BN", (1, 2, 3)), Town("Maidstone", "Kent", "ME", (14, 15, 16)),
         Town("Guildford", "Surrey", "GU", (1, 2, 4))),
        (_t("University Hospitals Sussex NHS Foundation Trust",
            ("Royal Sussex County Hospital", None, "Eastern Road, Brighton")),
         _t("Maidstone and Tunbridge Wells NHS Trust",
            ("Maidstone Hospital", None, "Hermitage Lane, Maidstone"),
            ("Tunbridge Wells Hospital", "Pembury", "Tonbridge Road, Pembury")),
         _t("Royal Surrey County Hospital NHS Foundation Trust",
            ("Royal Surrey County Hospital", None, "Egerton Road, Guildford"))),
    ),
    LocalOffice(
        "Health Education England Yorkshire and the Humber", "YHD", "1-AIIDHJ", None,
        (Town("Leeds", "West Yorkshire", "LS", (1, 2, 6, 9)), Town("Sheffield", "South Yorkshire", "S", (5, 10, 11)),
         Town("Hull", "East Riding of Yorkshire", "HU", (3, 5, 6))),
        (_t("Leeds Teaching Hospitals NHS Trust",
            ("St James's University Hospital", "Jimmy's", "Beckett Street, Leeds"),
            ("Leeds General Infirmary", "LGI", "Great George Street, Leeds")),
         _t("Sheffield Teaching Hospitals NHS Foundation Trust",
            ("Northern General Hospital", None, "Herries Road, Sheffield"),
            ("Royal Hallamshire Hospital", None, "Glossop Road, Sheffield")),
         _t("Hull University Teaching Hospitals NHS Trust",
            ("Hull Royal Infirmary", None, "Anlaby Road, Hull"))),
    ),
    LocalOffice(
        "Health Education England West Midlands", "WMD", "1-AIIDMQ", None,
        (Town("Birmingham", "West Midlands", "B", (9, 15, 18, 29)), Town("Coventry", "West Midlands", "CV", (1, 2, 5))),
        (_t("University Hospitals Birmingham NHS Foundation Trust",
            ("Queen Elizabeth Hospital Birmingham", "QEHB", "Mindelsohn Way, Birmingham"),
            ("Heartlands Hospital", None, "Bordesley Green East, Birmingham")),
         _t("University Hospitals Coventry and Warwickshire NHS Trust",
            ("University Hospital Coventry", "UHCW", "Clifford Bridge Road, Coventry"))),
    ),
    LocalOffice(
        "Health Education England Thames Valley", "TVD", "1-AIIDNQ", None,
        (Town("Oxford", "Oxfordshire", "OX", (1, 3, 4)), Town("Reading", "Berkshire", "RG", (1, 2, 30))),
        (_t("Oxford University Hospitals NHS Foundation Trust",
            ("John Radcliffe Hospital", "The JR", "Headley Way, Oxford"),
            ("Churchill Hospital", None, "Old Road, Oxford")),
         _t("Royal Berkshire NHS Foundation Trust",
            ("Royal Berkshire Hospital", None, "London Road, Reading"))),
    ),
)


@dataclass(frozen=True)
class Programme:
    name: str
    curricula: tuple[str, ...]          # first is the main specialty; a second is a dual curriculum
    sub_type: str
    grades: tuple[str, ...]             # one grade per training year
    sub_specialties: tuple[str, ...] = ()


# (programme, weight)
PROGRAMMES: tuple[tuple[Programme, int], ...] = (
    (Programme("Foundation", ("Foundation",), "MEDICAL_CURRICULUM", ("F1", "F2")), 220),
    (Programme("Academic Foundation", ("Foundation",), "AFT", ("F1", "F2")), 10),
    (Programme("Internal Medicine Training", ("Internal Medicine Stage One",), "MEDICAL_CURRICULUM",
               ("CT1", "CT2", "CT3")), 90),
    (Programme("Core Surgical Training", ("Core Surgery",), "MEDICAL_CURRICULUM", ("CT1", "CT2")), 40),
    (Programme("General Practice", ("General Practice",), "MEDICAL_CURRICULUM", ("ST1", "ST2", "ST3")), 180),
    (Programme("Cardiology", ("Cardiology", "General Internal Medicine"), "MEDICAL_SPR",
               ("ST3", "ST4", "ST5", "ST6", "ST7"), ("Interventional Cardiology", "Electrophysiology")), 30),
    (Programme("Respiratory Medicine", ("Respiratory Medicine", "General Internal Medicine"), "MEDICAL_SPR",
               ("ST3", "ST4", "ST5", "ST6", "ST7")), 25),
    (Programme("Gastroenterology", ("Gastroenterology", "General Internal Medicine"), "MEDICAL_SPR",
               ("ST3", "ST4", "ST5", "ST6", "ST7"), ("Hepatology",)), 25),
    (Programme("Anaesthetics", ("Anaesthetics",), "MEDICAL_CURRICULUM", ("CT1", "CT2", "ST3", "ST4", "ST5")), 60),
    (Programme("Paediatrics", ("Paediatrics",), "MEDICAL_CURRICULUM",
               ("ST1", "ST2", "ST3", "ST4", "ST5", "ST6", "ST7"), ("Neonatal Medicine",)), 50),
    (Programme("Obstetrics and Gynaecology", ("Obstetrics and Gynaecology",), "MEDICAL_CURRICULUM",
               ("ST1", "ST2", "ST3", "ST4", "ST5", "ST6", "ST7")), 35),
    (Programme("Core Psychiatry Training", ("Core Psychiatry",), "MEDICAL_CURRICULUM", ("CT1", "CT2", "CT3")), 35),
    (Programme("Trauma and Orthopaedic Surgery", ("Trauma and Orthopaedic Surgery",), "MEDICAL_SPR",
               ("ST3", "ST4", "ST5", "ST6", "ST7", "ST8")), 20),
    (Programme("Emergency Medicine", ("Emergency Medicine",), "MEDICAL_CURRICULUM",
               ("ST1", "ST2", "ST3", "ST4", "ST5", "ST6")), 40),
    (Programme("Clinical Radiology", ("Clinical Radiology",), "MEDICAL_CURRICULUM",
               ("ST1", "ST2", "ST3", "ST4", "ST5")), 20),
    (Programme("Histopathology", ("Histopathology",), "MEDICAL_CURRICULUM", ("ST1", "ST2", "ST3", "ST4", "ST5")), 10),
    (Programme("Dental Core Training", ("Dental Core Training",), "DENTAL_CURRICULUM", ("DCT1", "DCT2", "DCT3")), 15),
)

ROLES: tuple[tuple[str, int], ...] = (("DR in Training", 975), ("Placeholder", 18), ("Dummy Record", 7))
MEMBERSHIP_TYPES: tuple[tuple[str, int], ...] = (("SUBSTANTIVE", 90), ("LAT", 5), ("VISITOR", 3), ("MILITARY", 2))
PLACEMENT_TYPES: tuple[tuple[str, int], ...] = (
    ("In post", 850), ("In post - Acting up", 40), ("In post - Extension", 20), ("Parental leave", 50),
    ("Long-term sick", 20), ("Supernumerary", 20),
)
WTE: tuple[tuple[str, int], ...] = (("1.00", 80), ("0.80", 12), ("0.60", 6), ("0.50", 2))
FORM_STATES: tuple[tuple[str | None, int], ...] = (
    ("SUBMITTED", 60), ("DRAFT", 15), ("UNSUBMITTED", 8), ("DELETED", 2), (None, 15),
)
ARCP_OUTCOMES: tuple[tuple[str, int], ...] = (("1", 80), ("2", 10), ("3", 3), ("5", 5), ("6", 2))
