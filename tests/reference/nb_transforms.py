# Reference transcribed from source 000 (Conv2Former on CIFAR-10),
# source 002 (ConViT) and source 004 (DilateFormer)
# for tests only; not part of ppvit.
#
# The transform objects exactly as the notebooks built them, except `paddlex.transforms.MixupImage()`:
# paddlex is not installed (and 3.x has no paddlex.transforms); on a bare image it returned the image
# unchanged, so dropping it changes nothing. The image backend each notebook ran with is recorded:
# 000 and 004 call paddle.vision.set_image_backend('cv2'); 002 never does, so Cifar10 gave it PIL images.
import paddle.vision.transforms as transforms

T = transforms

NB000_BACKEND = "cv2"
NB002_BACKEND = "pil"
NB004_BACKEND = "cv2"

# --- 000 -------------------------------------------------------------------------------------------------
nb000_train_tfm = transforms.Compose([
    transforms.Resize((32, 32)),
    transforms.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2),
    # paddlex.transforms.MixupImage(),  (no-op, see header)
    # transforms.Cutmix(),
    transforms.RandomResizedCrop(32, scale=(0.6, 1.0)),
    transforms.RandomErasing(),
    transforms.RandomHorizontalFlip(0.5),
    transforms.RandomRotation(20),
    transforms.ToTensor(),
    transforms.Normalize(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)),
])
nb000_test_tfm = transforms.Compose([
    transforms.Resize((32, 32)),
    transforms.ToTensor(),
    transforms.Normalize(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)),
])

# --- 002 (one transform for both splits) -----------------------------------------------------------------
nb002_transform = T.Compose([
    T.Resize(size=(224, 224)),
    T.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225], data_format='HWC'),
    T.ToTensor()
])

# --- 004 -------------------------------------------------------------------------------------------------
nb004_train_tfm = transforms.Compose([
    transforms.Resize((230, 230)),
    transforms.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2),
    transforms.RandomResizedCrop(224, scale=(0.6, 1.0)),
    transforms.RandomHorizontalFlip(0.5),
    transforms.RandomRotation(20),
    # paddlex.transforms.MixupImage(),  (no-op, see header)
    transforms.ToTensor(),
    transforms.Normalize(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)),
])
nb004_test_tfm = transforms.Compose([
    transforms.Resize((224, 224)),
    transforms.ToTensor(),
    transforms.Normalize(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)),
])
